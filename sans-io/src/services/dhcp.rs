//! DHCP (RFC 2131, options RFC 2132): one lease, the guest's configured address.

use super::{Ctx, Outcome};
use crate::wire::parse::{Ethernet, Ipv4, Udp};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// Answers a DHCP message from the guest. PLACEHOLDER: being written.
pub fn handle(_ctx: &mut Ctx, _eth: &Ethernet, _ip: &Ipv4, _udp: &Udp) -> Outcome {
    Outcome::Ignored
}
