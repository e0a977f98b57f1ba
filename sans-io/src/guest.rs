//! What the engine has learnt about the guest from its frames: its MAC address and the
//! addresses it uses. Services answer with it, flows route to it, the NAT maps to it.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::MacAddr;

/// What we have learnt about the guest from its frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestState {
    /// The guest's MAC address, from the source of its frames.
    pub mac: Option<MacAddr>,
    /// The last IPv4 source address it used.
    pub addr4: Option<Ipv4Addr>,
    /// The last global IPv6 source address it used.
    pub addr6: Option<Ipv6Addr>,
    /// The last link-local IPv6 source address it used.
    pub addr6_ll: Option<Ipv6Addr>,
}
