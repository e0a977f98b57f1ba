//! ARP (RFC 826): we answer for every IPv4 address on the guest's link except its own.

use super::{Ctx, Outcome};
use crate::wire::parse::Ethernet;

/// Answers an ARP request from the guest. PLACEHOLDER: being written.
pub fn handle(_ctx: &mut Ctx, _eth: &Ethernet) -> Outcome {
    Outcome::Ignored
}
