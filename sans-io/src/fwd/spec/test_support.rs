//! Builders and checks shared by the spec's tests.

use std::net::{IpAddr, Ipv4Addr};

use super::{PortItem, PortMap, PortRange, PortRanges, PortSpec, SpecError};

pub(super) fn parse(s: &str) -> Result<PortSpec, SpecError> {
    s.parse()
}

pub(super) fn range(first: u16, last: u16) -> PortRange {
    PortRange { first, last }
}

pub(super) fn fwd(first: u16, last: u16, to_first: u16) -> PortItem {
    PortItem::Forward(PortMap {
        from: range(first, last),
        to_first,
        to_addr: None,
    })
}

pub(super) fn excl(first: u16, last: u16) -> PortItem {
    PortItem::Exclude(range(first, last))
}

pub(super) fn ports(bind: Option<IpAddr>, iface: Option<&str>, items: Vec<PortItem>) -> PortSpec {
    PortSpec::Ports(PortRanges {
        bind,
        iface: iface.map(str::to_owned),
        items,
    })
}

pub(super) fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

/// Parses `s`, checks the structure, and checks that it prints back as `canonical`.
pub(super) fn check(s: &str, expected: PortSpec, canonical: &str) {
    assert_eq!(parse(s), Ok(expected.clone()), "parsing {s:?}");
    assert_eq!(expected.to_string(), canonical, "printing {s:?}");
}

pub(super) fn error(s: &str) -> String {
    match parse(s) {
        Ok(spec) => panic!("{s:?} parsed as {spec:?}"),
        Err(SpecError(reason)) => reason,
    }
}

pub(super) fn ranges(s: &str) -> PortRanges {
    match parse(s) {
        Ok(PortSpec::Ports(r)) => r,
        other => panic!("{s:?} gave {other:?}"),
    }
}

/// `first-last` forwarded to `to_first..` at `addr`.
pub(super) fn fwd_at(first: u16, last: u16, addr: &str, to_first: u16) -> PortItem {
    PortItem::Forward(PortMap {
        from: range(first, last),
        to_first,
        to_addr: Some(addr.parse().expect("test address")),
    })
}

pub(super) fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("test address"))
}
