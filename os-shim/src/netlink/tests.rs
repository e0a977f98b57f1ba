//! The decoders on canned messages, the requests round-tripped through them, the
//! acknowledgements.

use std::net::Ipv4Addr;

use netlink_packet_core::{Emitable, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK_TLVS, NLM_F_CAPPED};
use netlink_packet_route::address::AddressScope;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteScope, RouteVia,
};
use netlink_packet_route::AddressFamily;
use sans_io::config::host::{HostRoute, NextHop};
use sans_io::config::GuestRoute;

use super::decode::*;
use super::request::*;
use super::*;

const DONE: [u8; 20] = [20, 0, 0, 0, 3, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Frames `payload` as a netlink message of type `kind`.
fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
    out
}

fn route_message(msg: RouteMessage) -> Vec<u8> {
    let mut payload = vec![0; msg.buffer_len()];
    msg.emit(&mut payload);
    message(uapi::RTM_NEWROUTE, &payload)
}

fn default_route(table: u8, flags: RouteFlags) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = table;
    msg.header.flags = flags;
    msg.header.kind = netlink_packet_route::route::RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 1))),
        RouteAttribute::Oif(3),
    ];
    msg
}

#[test]
fn empty_dump_is_just_done() {
    assert_eq!(parse_links(&DONE).unwrap(), vec![]);
    assert_eq!(parse_routes(&[DONE, DONE].concat()).unwrap(), vec![]);
}

#[test]
fn missing_done_is_malformed() {
    let err = parse_links(&[]).unwrap_err();
    assert!(
        matches!(
            err,
            NetlinkError::Malformed {
                dump: Dump::Links,
                ..
            }
        ),
        "{err}"
    );
    let msg = route_message(default_route(254, RouteFlags::empty()));
    let err = parse_routes(&msg).unwrap_err();
    assert!(err.to_string().contains("NLMSG_DONE"), "{err}");
}

#[test]
fn error_message_carries_errno() {
    let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0; 16]);
    let buf = message(NLMSG_ERROR, &payload);
    let err = parse_addrs(&buf).unwrap_err();
    assert!(
        matches!(err, NetlinkError::Kernel { dump: Dump::Addrs, errno } if errno == libc::EPERM),
        "{err}"
    );
}

#[test]
fn done_with_errno_fails_the_dump() {
    let buf = message(NLMSG_DONE, &(-libc::EBUSY).to_ne_bytes());
    let err = parse_routes(&buf).unwrap_err();
    assert!(matches!(err, NetlinkError::Kernel { errno, .. } if errno == libc::EBUSY));
}

#[test]
fn unexpected_type_is_malformed() {
    let buf = [
        route_message(default_route(254, RouteFlags::empty())),
        DONE.to_vec(),
    ]
    .concat();
    let err = parse_links(&buf).unwrap_err();
    assert!(
        err.to_string().contains("unexpected message type 24"),
        "{err}"
    );
}

#[test]
fn routes_keep_main_table_only_and_skip_clones() {
    let mut other_table = default_route(254, RouteFlags::empty());
    other_table.attributes.push(RouteAttribute::Table(1000));
    let buf = [
        route_message(default_route(255, RouteFlags::empty())),
        route_message(default_route(254, RouteFlags::Cloned)),
        route_message(other_table),
        route_message(default_route(254, RouteFlags::empty())),
        DONE.to_vec(),
    ]
    .concat();
    let routes = parse_routes(&buf).unwrap();
    assert_eq!(
        routes,
        vec![HostRoute {
            dst: Ipv4Addr::UNSPECIFIED.into(),
            dst_len: 0,
            nexthops: vec![NextHop {
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
                oif: Some(3),
            }],
            priority: 0,
            protocol: 0,
            scope: 0,
            kind: 1,
            pref_src: None,
            mtu: None,
        }]
    );
}

#[test]
fn ipv4_route_via_ipv6_gateway() {
    let mut msg = default_route(254, RouteFlags::empty());
    msg.attributes = vec![
        RouteAttribute::Via(RouteVia::Inet6("fe80::1".parse().unwrap())),
        RouteAttribute::Oif(2),
    ];
    let routes = parse_routes(&[route_message(msg), DONE.to_vec()].concat()).unwrap();
    assert_eq!(
        routes[0].nexthops,
        vec![NextHop {
            gateway: Some("fe80::1".parse().unwrap()),
            oif: Some(2)
        }]
    );
}

#[test]
fn truncated_attribute_is_malformed() {
    let mut buf = route_message(default_route(254, RouteFlags::empty()));
    // Claim a longer RTA_GATEWAY than the message holds.
    buf[16 + 12] = 200;
    buf.extend_from_slice(&DONE);
    let err = parse_routes(&buf).unwrap_err();
    assert!(
        matches!(err, NetlinkError::Malformed { offset: 0, .. }),
        "{err}"
    );
}

fn guest_route(dst: &str, len: u8, gw: Option<&str>) -> GuestRoute {
    GuestRoute {
        dst: dst.parse().unwrap(),
        dst_len: len,
        gateway: gw.map(|g| g.parse().unwrap()),
        priority: 0,
        mtu: None,
    }
}

fn reparse(msg: RouteMessage) -> HostRoute {
    let buf = [route_message(msg), DONE.to_vec()].concat();
    let mut routes = parse_routes(&buf).unwrap();
    assert_eq!(routes.len(), 1);
    routes.remove(0)
}

#[test]
fn route_request_round_trips() {
    let mut r = guest_route("203.0.113.0", 24, Some("192.0.2.1"));
    r.priority = 100;
    r.mtu = Some(1400);
    let msg = super::request::route_message(7, &r).unwrap();
    assert_eq!(msg.header.scope, RouteScope::Universe);
    let back = reparse(msg);
    assert_eq!(back.dst, r.dst);
    assert_eq!(back.dst_len, 24);
    assert_eq!(back.priority, 100);
    assert_eq!(back.mtu, Some(1400));
    assert_eq!(back.protocol, RTPROT_BOOT);
    assert_eq!(
        back.nexthops,
        vec![NextHop {
            gateway: r.gateway,
            oif: Some(7)
        }]
    );

    // On-link IPv4 route: link scope, no gateway; default route: no RTA_DST.
    let msg = super::request::route_message(7, &guest_route("192.0.2.0", 24, None)).unwrap();
    assert_eq!(msg.header.scope, RouteScope::Link);
    let msg =
        super::request::route_message(7, &guest_route("0.0.0.0", 0, Some("192.0.2.1"))).unwrap();
    assert!(!msg
        .attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::Destination(_))));

    // IPv4 through an IPv6 gateway: RTA_VIA.
    let msg =
        super::request::route_message(7, &guest_route("0.0.0.0", 0, Some("fe80::1"))).unwrap();
    assert_eq!(
        reparse(msg).nexthops[0].gateway,
        Some("fe80::1".parse().unwrap())
    );

    assert!(
        super::request::route_message(7, &guest_route("2001:db8::", 32, Some("192.0.2.1")))
            .is_err()
    );
    assert!(super::request::route_message(7, &guest_route("192.0.2.0", 33, None)).is_err());
}

#[test]
fn address_request_flags() {
    let msg = address_message(3, "2001:db8::2".parse().unwrap(), 64, true).unwrap();
    let mut payload = vec![0; msg.buffer_len()];
    msg.emit(&mut payload);
    let buf = [message(uapi::RTM_NEWADDR, &payload), DONE.to_vec()].concat();
    let addrs = parse_addrs(&buf).unwrap();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].ifindex, 3);
    assert_eq!(addrs[0].prefix_len, 64);
    assert_ne!(addrs[0].flags & 0x02, 0, "IFA_F_NODAD");

    let msg = address_message(3, "fe80::2".parse().unwrap(), 64, false).unwrap();
    assert_eq!(msg.header.scope, AddressScope::Link);
    let msg = address_message(3, "192.0.2.2".parse().unwrap(), 24, false).unwrap();
    assert_eq!(msg.header.scope, AddressScope::Universe);
    assert!(address_message(3, "192.0.2.2".parse().unwrap(), 40, false).is_err());
}

/// An NLMSG_ERROR payload: errno, the echoed 16-byte header (claiming `echoed_len`), the
/// echoed request body if any, then an NLMSGERR_ATTR_MSG.
fn nack(errno: i32, echoed_len: u32, body: &[u8], text: &str) -> Vec<u8> {
    let mut out = (-errno).to_ne_bytes().to_vec();
    out.extend_from_slice(&echoed_len.to_ne_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(body);
    let mut value = text.as_bytes().to_vec();
    value.push(0);
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
    out.extend_from_slice(&value);
    out.resize(align4(out.len()), 0);
    out
}

#[test]
fn acks_and_extended_acks() {
    let ack = [0u8; 20];
    assert_eq!(parse_ack(0, &ack).unwrap(), None);

    let text = "Nexthop has invalid gateway";
    let capped = nack(libc::ENETUNREACH, 60, &[], text);
    assert_eq!(
        parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &capped).unwrap(),
        Some((libc::ENETUNREACH, Some(text.to_owned())))
    );
    // Not capped: the request's 44-byte body comes first.
    let echoed = nack(libc::ENETUNREACH, 60, &[0xaa; 44], text);
    assert_eq!(
        parse_ack(NLM_F_ACK_TLVS, &echoed).unwrap(),
        Some((libc::ENETUNREACH, Some(text.to_owned())))
    );
    // Without NLM_F_ACK_TLVS the attributes are not looked for.
    assert_eq!(
        parse_ack(0, &capped).unwrap(),
        Some((libc::ENETUNREACH, None))
    );
    assert!(parse_ack(0, &[1, 2]).is_err());

    let err = NetlinkError::Refused {
        what: "adding route 203.0.113.0/24 via 198.51.100.1 on link 2".into(),
        errno: libc::ENETUNREACH,
        message: Some(text.into()),
    };
    assert_eq!(
        err.to_string(),
        "adding route 203.0.113.0/24 via 198.51.100.1 on link 2: Network is unreachable \
         (Nexthop has invalid gateway)"
    );
    assert_eq!(
        err.reason(),
        "Network is unreachable (Nexthop has invalid gateway)"
    );
    assert_eq!(err.errno(), Some(libc::ENETUNREACH));
}

#[test]
fn routes_described() {
    assert_eq!(
        describe_route(&guest_route("0.0.0.0", 0, Some("192.0.2.1"))),
        "default via 192.0.2.1"
    );
    let mut r = guest_route("203.0.113.0", 24, Some("198.51.100.1"));
    r.priority = 100;
    r.mtu = Some(1400);
    assert_eq!(
        describe_route(&r),
        "203.0.113.0/24 via 198.51.100.1 metric 100 mtu 1400"
    );
    assert_eq!(describe_route(&guest_route("::", 0, None)), "default");
    assert_eq!(
        describe_route(&guest_route("2001:db8::", 32, None)),
        "2001:db8::/32"
    );
}
