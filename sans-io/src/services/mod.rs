//! Layer 2 and 3 configuration services answered from [`Config`]: ARP, DHCP, NDP, DHCPv6.
//!
//! Each service is a function from one guest frame to zero or more answers queued on a
//! [`FrameQueue`], with an [`Outcome`] the engine counts. They keep no state of their own
//! beyond what [`GuestState`] records.

pub mod arp;
pub mod dhcp;
pub mod dhcpv6;
pub mod ndp;

use crate::config::Config;
use crate::guest::GuestState;
use crate::wire::{FrameQueue, Malformed};

/// Bounds on the DNS configuration we copy into an answer, shared by DHCPv6 and router
/// advertisements so that both fit IPv6's minimum MTU (1280 bytes): DNS servers, and octets
/// of encoded search domains.
pub(crate) const MAX_DNS_SERVERS: usize = 8;
pub(crate) const MAX_DOMAIN_LIST_LEN: usize = 256;

/// What a service did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// One or more answers were queued.
    Answered,
    /// Well-formed, but nothing to say (not for us, service disabled, a message we don't
    /// answer).
    Ignored,
    /// Dropped: the reason, for counters and debug logs.
    Malformed(Malformed),
}

/// What every service needs to answer.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub guest: &'a GuestState,
    pub out: &'a mut FrameQueue,
}
