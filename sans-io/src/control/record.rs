//! One rule record (the C `struct fwd_rule`, 56 bytes) and [`ForwardRule`].
//!
//! Layout: `addr[16]` and `taddr[16]` as IPv6 addresses with IPv4 as `::ffff:a.b.c.d`
//! (`taddr` `::` for none), `ifname[16]` NUL-terminated (empty for none), `first`, `last`,
//! `to` as big-endian u16, `proto` (6 TCP, 17 UDP), `flags` (below).

use std::net::{IpAddr, Ipv6Addr};

use super::{ControlError, IFNAMSIZ, RULE_LEN};
use crate::flow::Proto;
use crate::fwd::rule::{ForwardRule, Listen};

/// Listen on every address of both families; the address is `::`.
pub const FLAG_DUAL_STACK_ANY: u8 = 1;
/// Best effort: ports that can't be bound are skipped.
pub const FLAG_WEAK: u8 = 2;
/// `auto`: only ports bound on the other side.
pub const FLAG_SCAN: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_DUAL_STACK_ANY | FLAG_WEAK | FLAG_SCAN;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Why a rule can't be written as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("Interface name '{0}' is too long or contains a NUL byte")]
    BadIfname(String),
}

fn inany(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn from_inany(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

/// Writes `rule` as a record.
pub fn encode(rule: &ForwardRule, out: &mut [u8; RULE_LEN]) -> Result<(), RecordError> {
    out.fill(0);
    let mut flags = 0;
    match rule.listen {
        Listen::DualStackAny => flags |= FLAG_DUAL_STACK_ANY,
        Listen::Addr(a) => out[0..16].copy_from_slice(&inany(a)),
    }
    if let Some(t) = rule.target {
        out[16..32].copy_from_slice(&inany(t));
    }
    if let Some(name) = &rule.iface {
        let bytes = name.as_bytes();
        if bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return Err(RecordError::BadIfname(name.clone()));
        }
        out[32..32 + bytes.len()].copy_from_slice(bytes);
    }
    out[48..50].copy_from_slice(&rule.first.to_be_bytes());
    out[50..52].copy_from_slice(&rule.last.to_be_bytes());
    out[52..54].copy_from_slice(&rule.to.to_be_bytes());
    out[54] = match rule.proto {
        Proto::Tcp => PROTO_TCP,
        Proto::Udp => PROTO_UDP,
    };
    if rule.weak {
        flags |= FLAG_WEAK;
    }
    if rule.scan {
        flags |= FLAG_SCAN;
    }
    out[55] = flags;
    Ok(())
}

/// A NUL-terminated name in a fixed field: `None` when empty.
pub(super) fn field_name(
    field: &[u8],
    unterminated: ControlError,
) -> Result<Option<String>, ControlError> {
    let end = field.iter().position(|&b| b == 0).ok_or(unterminated)?;
    if end == 0 {
        return Ok(None);
    }
    std::str::from_utf8(&field[..end])
        .map(|s| Some(s.to_owned()))
        .map_err(|_| ControlError::NameNotUtf8)
}

/// Reads a record. Only what the record itself can get wrong is checked here; whether the
/// rule makes sense is [`ForwardRule::check`]'s (and the table's) to say.
pub fn decode(bytes: &[u8; RULE_LEN]) -> Result<ForwardRule, ControlError> {
    let proto = match bytes[54] {
        PROTO_TCP => Proto::Tcp,
        PROTO_UDP => Proto::Udp,
        other => return Err(ControlError::BadProto(other)),
    };
    let flags = bytes[55];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(ControlError::ReservedFlags(flags & !KNOWN_FLAGS));
    }
    let mut addr = [0; 16];
    addr.copy_from_slice(&bytes[0..16]);
    let listen = if flags & FLAG_DUAL_STACK_ANY != 0 {
        let a = Ipv6Addr::from(addr);
        if !a.is_unspecified() {
            return Err(ControlError::DualStackWithAddress(a));
        }
        Listen::DualStackAny
    } else {
        Listen::Addr(from_inany(addr))
    };
    let mut taddr = [0; 16];
    taddr.copy_from_slice(&bytes[16..32]);
    let target = (taddr != [0; 16]).then(|| from_inany(taddr));
    let iface = field_name(&bytes[32..48], ControlError::IfnameNotTerminated)?;
    let port = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    Ok(ForwardRule {
        proto,
        listen,
        iface,
        first: port(48),
        last: port(50),
        to: port(52),
        target,
        weak: flags & FLAG_WEAK != 0,
        scan: flags & FLAG_SCAN != 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// Podman's `-t 0.0.0.0/8080:10.88.0.2/80`, byte by byte.
    #[test]
    fn an_ipv4_rule_with_a_target() {
        let rule = ForwardRule {
            listen: Listen::Addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            target: Some(IpAddr::V4(Ipv4Addr::new(10, 88, 0, 2))),
            to: 80,
            ..ForwardRule::ports(Proto::Tcp, 8080, 8080)
        };
        let mut expected = [0u8; RULE_LEN];
        expected[10..12].copy_from_slice(&[0xff, 0xff]); // ::ffff:0.0.0.0
        expected[26..32].copy_from_slice(&[0xff, 0xff, 10, 88, 0, 2]);
        expected[48..56].copy_from_slice(&[0x1f, 0x90, 0x1f, 0x90, 0, 80, 6, 0]);
        let mut out = [0xaa; RULE_LEN];
        encode(&rule, &mut out).unwrap();
        assert_eq!(out, expected);
        assert_eq!(decode(&out), Ok(rule));
    }

    #[test]
    fn a_dual_stack_udp_rule_on_an_interface() {
        let rule = ForwardRule {
            iface: Some("eth0".into()),
            weak: true,
            scan: true,
            ..ForwardRule::ports(Proto::Udp, 53, 54)
        };
        let mut expected = [0u8; RULE_LEN];
        expected[32..36].copy_from_slice(b"eth0");
        expected[48..56].copy_from_slice(&[0, 53, 0, 54, 0, 53, 17, 7]);
        let mut out = [0; RULE_LEN];
        encode(&rule, &mut out).unwrap();
        assert_eq!(out, expected);
        assert_eq!(decode(&out), Ok(rule));
    }

    #[test]
    fn bad_records_say_why() {
        let mut good = [0u8; RULE_LEN];
        encode(&ForwardRule::ports(Proto::Tcp, 80, 80), &mut good).unwrap();

        let mut b = good;
        b[54] = 132; // SCTP
        assert_eq!(decode(&b), Err(ControlError::BadProto(132)));
        let mut b = good;
        b[55] |= 0x80;
        assert_eq!(decode(&b), Err(ControlError::ReservedFlags(0x80)));
        let mut b = good;
        b[32..48].fill(b'x');
        assert_eq!(decode(&b), Err(ControlError::IfnameNotTerminated));
        let mut b = good;
        b[32] = 0xff;
        assert_eq!(decode(&b), Err(ControlError::NameNotUtf8));
        let mut b = good;
        b[15] = 1; // dual-stack with ::1
        assert_eq!(
            decode(&b),
            Err(ControlError::DualStackWithAddress(Ipv6Addr::LOCALHOST))
        );
        let long = ForwardRule {
            iface: Some("a-very-long-name".into()),
            ..ForwardRule::ports(Proto::Tcp, 80, 80)
        };
        assert!(encode(&long, &mut b).is_err());
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            // Canonical IPv6: a v4-mapped address decodes as IPv4.
            any::<[u8; 16]>().prop_map(|b| Ipv6Addr::from(b).to_canonical()),
        ]
    }

    pub(crate) fn arb_rule() -> impl Strategy<Value = ForwardRule> {
        (
            any::<bool>(),
            proptest::option::of(arb_addr()),
            proptest::option::of(
                arb_addr().prop_filter("not ::", |a| *a != IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ),
            proptest::option::of("[a-z0-9]{1,15}"),
            any::<(u16, u16, u16, bool, bool)>(),
        )
            .prop_map(
                |(tcp, listen, target, iface, (first, last, to, weak, scan))| ForwardRule {
                    proto: if tcp { Proto::Tcp } else { Proto::Udp },
                    listen: listen.map_or(Listen::DualStackAny, Listen::Addr),
                    iface,
                    first,
                    last,
                    to,
                    target,
                    weak,
                    scan,
                },
            )
    }

    proptest! {
        #[test]
        fn records_round_trip(rule in arb_rule()) {
            let mut out = [0; RULE_LEN];
            encode(&rule, &mut out).unwrap();
            prop_assert_eq!(decode(&out), Ok(rule));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), RULE_LEN)) {
            let bytes: [u8; RULE_LEN] = bytes.try_into().unwrap();
            if let Ok(rule) = decode(&bytes) {
                let mut again = [0; RULE_LEN];
                encode(&rule, &mut again).unwrap();
                prop_assert_eq!(decode(&again), Ok(rule));
            }
        }
    }
}
