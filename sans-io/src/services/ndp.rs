//! NDP (RFC 4861): neighbour advertisements for us, router advertisements.

use super::{Ctx, Outcome};
use crate::wire::parse::{Ethernet, Ipv6};

/// Whether an ICMPv6 message is NDP (types 133 to 137).
pub fn is_ndp(icmp: &[u8]) -> bool {
    icmp.first().is_some_and(|t| (133..=137).contains(t))
}

/// Answers an NDP message from the guest. PLACEHOLDER: being written.
pub fn handle(_ctx: &mut Ctx, _eth: &Ethernet, _ip: &Ipv6, _icmp: &[u8]) -> Outcome {
    Outcome::Ignored
}

/// Queues an unsolicited router advertisement to all nodes. PLACEHOLDER: being written.
pub fn unsolicited_ra(_ctx: &mut Ctx) -> Outcome {
    Outcome::Ignored
}
