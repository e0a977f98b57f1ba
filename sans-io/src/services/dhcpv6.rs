//! DHCPv6 (RFC 8415): one address, DNS (RFC 3646) and domain search list.

use super::{Ctx, Outcome};
use crate::wire::parse::{Ethernet, Ipv6, Udp};

pub const SERVER_PORT: u16 = 547;
pub const CLIENT_PORT: u16 = 546;

/// Answers a DHCPv6 message from the guest. PLACEHOLDER: being written.
pub fn handle(_ctx: &mut Ctx, _eth: &Ethernet, _ip: &Ipv6, _udp: &Udp) -> Outcome {
    Outcome::Ignored
}
