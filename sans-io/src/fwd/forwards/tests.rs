use super::*;
use crate::config::derive::derive;
use crate::config::{Mode, NetOptions};
use crate::fwd::rule::MAX_RULES;
use crate::fwd::PortSpec;

const EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// pasta's configuration on an empty host (local mode: both families), with `-t` and `-T`
/// given as `tcp_in`, `tcp_out` (`None`: the default).
fn config(tcp_in: &[&str], tcp_out: &[&str]) -> Config {
    let mut opts = NetOptions::new(Mode::Pasta);
    for s in tcp_in {
        opts.tcp_in.add(s.parse::<PortSpec>().unwrap()).unwrap();
    }
    for s in tcp_out {
        opts.tcp_out.add(s.parse::<PortSpec>().unwrap()).unwrap();
    }
    let c = derive(&opts, &Default::default(), &Default::default())
        .unwrap()
        .config;
    assert!(c.ip4.is_some() && c.ip6.is_some());
    c
}

fn forwards(c: &Config) -> Forwards {
    let (f, error) = Forwards::from_config(c, EPHEMERAL);
    assert_eq!(error, None);
    f
}

fn tcp(listen: Listen, first: u16, last: u16, to: u16) -> ForwardRule {
    ForwardRule {
        listen,
        to,
        ..ForwardRule::ports(Proto::Tcp, first, last)
    }
}

fn socket(proto: ProtoKey, addr: &str, to: Option<u16>) -> ListenSocket {
    ListenSocket {
        proto,
        addr: sa(addr),
        iface: None,
        to,
    }
}

#[test]
fn command_line_rules_look_up_as_the_modes_did() {
    let specs = ["2222:22,8080-8081:80-81,9000-9100,~9050", "127.0.0.1/9000"];
    let c = config(&specs, &["none"]);
    let f = forwards(&c);
    let rules: Vec<String> = f
        .table(Direction::Inbound)
        .rules()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rules,
        [
            "TCP *:2222  =>  22",
            "TCP *:8080-8081  =>  80-81",
            "TCP *:9000-9049  =>  9000-9049",
            "TCP *:9051-9100  =>  9051-9100",
            "TCP 127.0.0.1:9000  =>  9000",
            // UDP follows TCP's ports, untranslated.
            "UDP *:2222  =>  2222",
            "UDP *:8080-8081  =>  8080-8081",
            "UDP *:9000-9049  =>  9000-9049",
            "UDP *:9051-9100  =>  9051-9100",
            "UDP 127.0.0.1:9000  =>  9000",
        ]
    );
    // Every port looks up as the accumulated modes did, from a loopback and another address.
    for local in [ip("127.0.0.1"), ip("192.0.2.1"), ip("::1")] {
        // (The modes expand their specs on every lookup: the ports around the specs' only.)
        let around = [1..=30, 2200..=2250, 8000..=8100, 8990..=9110, 65500..=65535];
        for port in around.into_iter().flatten() {
            let before = c.forwarding.tcp_in.target(local, port, EPHEMERAL);
            let now = f.map_in(Proto::Tcp, local, port).map(|(t, p)| {
                assert_eq!(t, None);
                p
            });
            assert_eq!(now, before, "{local} port {port}");
        }
    }
}

#[test]
fn all_is_best_effort_around_the_ephemeral_ports_and_auto_is_kept_beside() {
    let mut opts = NetOptions::new(Mode::Passt);
    opts.tcp_in.add(PortSpec::All).unwrap();
    let c = derive(&opts, &Default::default(), &Default::default())
        .unwrap()
        .config;
    let f = forwards(&c);
    let rules: Vec<String> = f
        .table(Direction::Inbound)
        .rules()
        .iter()
        .filter(|r| r.proto == Proto::Tcp)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rules,
        [
            "TCP *:1-32767  =>  1-32767 (best effort)",
            "TCP *:61000-65535  =>  61000-65535 (best effort)"
        ]
    );
    assert!(f
        .listeners(Direction::Inbound)
        .open
        .iter()
        .all(|(_, req)| !req));

    // pasta's default: auto, beside an empty table.
    let c = config(&[], &[]);
    let f = forwards(&c);
    assert!(f.table(Direction::Inbound).is_empty() && f.table(Direction::Outbound).is_empty());
    assert!(f.auto(Direction::Inbound, Proto::Tcp) && f.auto(Direction::Outbound, Proto::Udp));
    assert_eq!(
        f.map_in(Proto::Udp, ip("192.0.2.1"), 5353),
        Some((None, 5353))
    );
    // An explicit rule added later wins for its ports, and auto leaves them alone.
    let mut table = ForwardTable::new();
    let mut rule = tcp(Listen::Addr(ip("0.0.0.0")), 8080, 8080, 80);
    rule.target = Some(ip("10.88.0.2"));
    table.add(rule).unwrap();
    let mut f = f;
    let change = f.plan(&c, Direction::Inbound, table).unwrap();
    f.commit(change);
    assert_eq!(
        f.map_in(Proto::Tcp, ip("192.0.2.1"), 8080),
        Some((Some(ip("10.88.0.2")), 80))
    );
    assert_eq!(
        f.map_in(Proto::Tcp, ip("::1"), 8080),
        Some((None, 8080)),
        "IPv6: only auto"
    );
    assert!(f.claims(Direction::Inbound, Proto::Tcp, 8080));
    assert!(!f.claims(Direction::Inbound, Proto::Udp, 8080));
    assert!(
        f.auto(Direction::Inbound, Proto::Tcp),
        "a table can't turn auto off"
    );
}

#[test]
fn a_replacement_opens_and_closes_only_what_changed() {
    let c = config(&["22,8080"], &["none"]);
    let mut f = forwards(&c);
    let start = f.listeners(Direction::Inbound);
    assert_eq!(start.open.len(), 8, "{start:?}");
    assert!(start.open.iter().all(|(_, required)| *required));

    // Keep 22, move 8080 to IPv4 only, add 9000 best-effort.
    let mut table = ForwardTable::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        table.add(ForwardRule::ports(proto, 22, 22)).unwrap();
    }
    table
        .add(tcp(Listen::Addr(ip("0.0.0.0")), 8080, 8080, 8080))
        .unwrap();
    let mut weak = tcp(Listen::DualStackAny, 9000, 9000, 9000);
    weak.weak = true;
    table.add(weak).unwrap();
    let change = f.plan(&c, Direction::Inbound, table.clone()).unwrap();
    assert_eq!(
        change.diff.close,
        [
            socket(ProtoKey::Tcp, "[::]:8080", None),
            socket(ProtoKey::Udp, "0.0.0.0:8080", None),
            socket(ProtoKey::Udp, "[::]:8080", None),
        ]
    );
    assert_eq!(
        change.diff.open,
        [
            (socket(ProtoKey::Tcp, "0.0.0.0:9000", None), false),
            (socket(ProtoKey::Tcp, "[::]:9000", None), false),
        ]
    );
    // Planning changed nothing.
    assert_eq!(
        f.map_in(Proto::Udp, ip("192.0.2.1"), 8080),
        Some((None, 8080))
    );
    f.commit(change);
    assert_eq!(f.map_in(Proto::Udp, ip("192.0.2.1"), 8080), None);
    assert_eq!(f.table(Direction::Inbound), &table);
    // The same table again: nothing to do.
    assert!(f
        .plan(&c, Direction::Inbound, table)
        .unwrap()
        .diff
        .is_empty());
}

#[test]
fn outbound_sockets_are_on_the_namespace_loopback_and_lead_to_their_port() {
    let c = config(&["none"], &["5000:6000"]);
    let f = forwards(&c);
    let open: Vec<ListenSocket> = f
        .listeners(Direction::Outbound)
        .open
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| s.proto == ProtoKey::Tcp)
        .collect();
    assert_eq!(
        open,
        [
            socket(ProtoKey::Tcp, "127.0.0.1:5000", Some(6000)),
            socket(ProtoKey::Tcp, "[::1]:5000", Some(6000)),
        ]
    );
    // Leading elsewhere is another socket.
    let mut table = f.table(Direction::Outbound).clone();
    table.clear();
    table
        .add(tcp(Listen::DualStackAny, 5000, 5000, 6001))
        .unwrap();
    let diff = f.plan(&c, Direction::Outbound, table).unwrap().diff;
    assert_eq!(diff.open.len(), 2);
    assert_eq!(diff.close.len(), 4, "TCP's and UDP's");
}

#[test]
fn tables_the_configuration_cannot_serve_are_refused() {
    let mut c = config(&["none"], &["none"]);
    let f = forwards(&c);
    let refused = |c: &Config, dir, rule: ForwardRule| {
        let mut table = ForwardTable::new();
        table.push_unchecked(rule).unwrap();
        f.plan(c, dir, table).unwrap_err()
    };
    let mut scan = tcp(Listen::DualStackAny, 1, 65535, 1);
    scan.scan = true;
    assert!(matches!(
        refused(&c, Direction::Inbound, scan),
        ForwardError::ScanAtRunTime(_)
    ));
    let mut to_container = tcp(Listen::Addr(ip("0.0.0.0")), 80, 80, 80);
    to_container.target = Some(ip("10.88.0.2"));
    assert!(matches!(
        refused(&c, Direction::Outbound, to_container.clone()),
        ForwardError::OutboundTarget(_)
    ));
    c.ip4 = None;
    assert_eq!(
        refused(&c, Direction::Inbound, to_container).to_string(),
        "IPv4 forward, but IPv4 not enabled"
    );
    c.protocols.udp = false;
    assert_eq!(
        refused(
            &c,
            Direction::Inbound,
            ForwardRule::ports(Proto::Udp, 53, 53)
        )
        .to_string(),
        "UDP forward, but UDP not enabled"
    );
    c.mode = Mode::Passt;
    assert!(matches!(
        refused(
            &c,
            Direction::Outbound,
            ForwardRule::ports(Proto::Tcp, 53, 53)
        ),
        ForwardError::NoOutbound(_)
    ));
}

#[test]
fn target_addresses_are_known_as_not_the_guests() {
    let c = config(&["none"], &["none"]);
    let mut f = forwards(&c);
    assert!(!f.is_target(ip("10.88.0.2")));
    let mut table = ForwardTable::new();
    let mut rule = tcp(Listen::Addr(ip("::")), 8080, 8080, 80);
    rule.target = Some(ip("fd00::2"));
    table.add(rule).unwrap();
    let change = f.plan(&c, Direction::Inbound, table).unwrap();
    f.commit(change);
    assert!(f.is_target(ip("fd00::2")));
    assert!(!f.is_target(ip("fd00::3")));
}

#[test]
fn too_many_command_line_rules_are_an_error() {
    // Every other port of a range: one rule each.
    let spec = (0..=MAX_RULES as u16)
        .map(|i| (1000 + 2 * i).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let c = config(&[spec.as_str()], &["none"]);
    let (f, error) = Forwards::from_config(&c, EPHEMERAL);
    assert_eq!(error, Some(RuleError::TooMany));
    assert_eq!(f.table(Direction::Inbound).len(), MAX_RULES);
}
