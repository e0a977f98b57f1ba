//! Why a guest frame was dropped as malformed: one error type per layer or message, next to
//! its parser, and [`Malformed`], the one the engine counts (`Counters::last_malformed`) and
//! logs. Each reads as its layer and the reason, "ipv4: bad header checksum"; tests match on
//! the variants.

use super::arp::ArpError;
use super::dhcp::DhcpError;
use super::dhcpv6::Dhcpv6Error;
use super::icmp_echo::EchoError;
use super::ndp::NdpError;
use super::parse::{EthernetError, Ipv4Error, Ipv6Error, UdpError};
use super::tcp::TcpError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("ethernet: {0}")]
    Ethernet(#[from] EthernetError),
    #[error("arp: {0}")]
    Arp(#[from] ArpError),
    #[error("ipv4: {0}")]
    Ipv4(#[from] Ipv4Error),
    #[error("ipv6: {0}")]
    Ipv6(#[from] Ipv6Error),
    #[error("udp: {0}")]
    Udp(#[from] UdpError),
    #[error("tcp: {0}")]
    Tcp(#[from] TcpError),
    #[error("icmp: {0}")]
    Echo(#[from] EchoError),
    #[error("dhcp: {0}")]
    Dhcp(#[from] DhcpError),
    #[error("dhcpv6: {0}")]
    Dhcpv6(#[from] Dhcpv6Error),
    #[error("ndp: {0}")]
    Ndp(#[from] NdpError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_layer_then_reason() {
        let why = Malformed::from(Ipv4Error::Checksum);
        assert_eq!(why.to_string(), "ipv4: bad header checksum");
        let why = Malformed::from(NdpError::CodeNotZero);
        assert_eq!(why.to_string(), "ndp: code is not 0");
    }
}
