//! Full UDP and echo flow tables: one-shot exchanges (DNS lookups, single pings) far beyond
//! the table's size all get answers, the flows done with making room for the new ones;
//! conversations survive such a flood; a table full of active flows refuses new ones and
//! counts them; running out of descriptors is met the same way as a full table.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sans_io::flow::idle::{EVICT_IDLE, ONE_SHOT_TIMEOUT};
use sans_io::wire::parse::{self, ethertype, ip_proto};
use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::world::{Direction, World};
use sim::Scenario;

fn guest4(port: u16) -> SocketAddr {
    SocketAddr::new(HOST_ADDR.parse().unwrap(), port)
}

fn dns_server() -> SocketAddr {
    addr(&format!("{REMOTE}:53"))
}

/// The guest sends `payload` from `port` to `server` and waits (a second at most) for the
/// engine to pass the answer on; returns whether it did.
fn exchange(w: &mut World, port: u16, server: SocketAddr, payload: &[u8]) -> bool {
    let before = w.counters().udp.datagrams_in;
    w.guest_udp(guest4(port), server, payload);
    w.run_until(Duration::from_secs(1), |w| {
        w.counters().udp.datagrams_in > before
    })
}

/// Runs the world for exactly `d` of virtual time (`World::run_for` only stops at the first
/// deadline past its end, which may be minutes away: flow timeouts would pass meanwhile).
fn run_exactly(w: &mut World, d: Duration) {
    let end = w.now + d;
    loop {
        let mut steps = 0;
        while w.step() {
            steps += 1;
            assert!(steps < 100_000, "livelock at {:?}", w.now);
        }
        let next = w
            .next_deadline()
            .map(|t| t.max(w.now + Duration::from_millis(1)));
        match next {
            Some(t) if t <= end => w.now = t,
            _ => {
                w.now = end;
                while w.step() {}
                return;
            }
        }
    }
}

/// The payloads the guest received, by destination port.
fn received_by_port(w: &World) -> BTreeMap<u16, Vec<Vec<u8>>> {
    let mut by_port: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
    for (_, dst, payload) in w.udp_at_guest() {
        by_port.entry(dst.port()).or_default().push(payload);
    }
    by_port
}

#[test]
fn ten_thousand_one_shot_lookups_through_a_small_table_all_get_answers() {
    const TABLE: usize = 256;
    const LOOKUPS: u16 = 10_000;
    let mut w = Scenario::new(41)
        .engine(|o| o.max_udp_flows = TABLE)
        .build();
    w.host.udp_echo(dns_server());
    // Conversations under way before the flood (three exchanges each), then quiet for longer
    // than EVICT_IDLE between exchanges: a least recently used eviction alone would pick them
    // before the lookups just answered.
    let chat_server = addr(&format!("{REMOTE}:4000"));
    w.host.udp_echo(chat_server);
    let chats: Vec<u16> = (1000..1004).collect();
    let chat_every = EVICT_IDLE * 2;
    let mut chat_rounds = 0u32;
    for _ in 0..3 {
        for &port in &chats {
            let msg = format!("chat {port} {chat_rounds}");
            assert!(exchange(&mut w, port, chat_server, msg.as_bytes()));
        }
        chat_rounds += 1;
    }
    let mut next_chat = w.now + chat_every;
    for i in 0..LOOKUPS {
        if w.now >= next_chat {
            for &port in &chats {
                let msg = format!("chat {port} {chat_rounds}");
                assert!(exchange(&mut w, port, chat_server, msg.as_bytes()));
            }
            chat_rounds += 1;
            next_chat = w.now + chat_every;
        }
        let port = 20_000 + i;
        assert!(
            exchange(&mut w, port, dns_server(), &port.to_be_bytes()),
            "lookup {i} got no answer: {:?}",
            w.counters().udp
        );
        assert!(w.engine.udp().len() <= TABLE);
    }
    assert!(
        chat_rounds >= 3 + 3,
        "the flood lasted {chat_rounds} rounds of chat"
    );
    // The last answer's way to the guest.
    run_exactly(&mut w, Duration::from_millis(10));

    let got = received_by_port(&w);
    for i in 0..LOOKUPS {
        let port = 20_000 + i;
        assert_eq!(
            got.get(&port),
            Some(&vec![port.to_be_bytes().to_vec()]),
            "port {port}"
        );
    }
    for &port in &chats {
        assert_eq!(got[&port].len(), chat_rounds as usize, "port {port}");
    }
    let c = &w.counters().udp;
    // Every conversation kept its one flow (and its host socket) throughout.
    assert_eq!(
        c.flows_opened,
        u64::from(LOOKUPS) + chats.len() as u64,
        "{c:?}"
    );
    assert_eq!(c.table_full, 0, "{c:?}");
    assert!(c.evicted >= u64::from(LOOKUPS) - TABLE as u64, "{c:?}");
    assert!(w.host.open_sockets() <= TABLE);
    w.assert_no_violations();
}

#[test]
fn a_table_full_of_active_flows_refuses_new_ones_until_one_goes_quiet() {
    const TABLE: usize = 8;
    let mut w = Scenario::new(42)
        .engine(|o| o.max_udp_flows = TABLE)
        .build();
    let server = addr(&format!("{REMOTE}:4000"));
    w.host.udp_echo(server);
    let ports: Vec<u16> = (1000..1000 + TABLE as u16).collect();
    // Every flow exchanges a datagram every tenth of a second.
    let chat = |w: &mut World, round: u32, ports: &[u16]| {
        for &port in ports {
            assert!(exchange(w, port, server, format!("{round}").as_bytes()));
        }
        run_exactly(w, Duration::from_millis(100));
    };
    for round in 0..20 {
        chat(&mut w, round, &ports);
    }
    assert_eq!(w.engine.udp().len(), TABLE);
    w.guest_udp(guest4(2000), server, b"newcomer");
    run_exactly(&mut w, Duration::from_millis(50));
    let c = &w.counters().udp;
    assert_eq!((c.table_full, c.evicted), (1, 0), "{c:?}");
    assert_eq!(received_by_port(&w).get(&2000), None);

    // One flow stops; once it has been quiet for EVICT_IDLE, the newcomer takes its place.
    let (quiet, busy) = ports.split_at(1);
    let mut round = 20;
    let quiet_since = w.now;
    while w.now < quiet_since + EVICT_IDLE {
        chat(&mut w, round, busy);
        round += 1;
    }
    assert!(exchange(&mut w, 2000, server, b"newcomer"));
    run_exactly(&mut w, Duration::from_millis(10));
    let c = &w.counters().udp;
    assert_eq!((c.table_full, c.evicted), (1, 1), "{c:?}");
    assert_eq!(received_by_port(&w)[&2000], [b"newcomer".to_vec()]);
    // The quiet flow went, the busy ones stayed.
    let flows: Vec<u16> = w.engine.udp().flows().map(|f| f.guest.port()).collect();
    assert!(!flows.contains(&quiet[0]), "{flows:?}");
    assert!(busy.iter().all(|p| flows.contains(p)), "{flows:?}");
}

#[test]
fn one_shot_flows_expire_after_the_short_timeout_conversations_after_the_long_one() {
    let mut w = Scenario::new(43).build();
    w.host.udp_echo(dns_server());
    assert!(exchange(&mut w, 3000, dns_server(), b"lookup"));
    // Three exchanges: a conversation.
    for _ in 0..3 {
        assert!(exchange(&mut w, 3001, dns_server(), b"chat"));
    }
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(600), |w| w.engine.udp().len() == 1));
    let one_shot = w.now - t0;
    assert!(
        one_shot >= ONE_SHOT_TIMEOUT - Duration::from_millis(10) && one_shot <= ONE_SHOT_TIMEOUT,
        "{one_shot:?}"
    );
    assert!(w.run_until(Duration::from_secs(600), |w| w.engine.udp().is_empty()));
    let conversation = w.now - t0;
    let long = sans_io::flow::udp::UDP_TIMEOUT;
    assert!(
        conversation >= long - Duration::from_millis(10) && conversation <= long,
        "{conversation:?}"
    );
    assert_eq!(w.counters().udp.flows_expired, 2);
    assert_eq!(w.host.open_sockets(), 0);
}

#[test]
fn out_of_descriptors_an_answered_flow_makes_room() {
    let mut w = Scenario::new(44).host(|h| h.max_sockets = 16).build();
    w.host.udp_echo(dns_server());
    for i in 0..200u16 {
        assert!(exchange(&mut w, 20_000 + i, dns_server(), &i.to_be_bytes()));
    }
    let c = &w.counters().udp;
    assert_eq!((c.open_failed, c.table_full), (0, 0), "{c:?}");
    assert!(c.evicted >= 200 - 16, "{c:?}");
    assert!(w.host.open_sockets() <= 16);
}

/// Echo replies the guest received: (identifier, sequence number).
fn echo_replies(w: &World) -> Vec<(u16, u16)> {
    let mut v = Vec::new();
    for (_, dir, frame) in &w.transcript {
        if *dir != Direction::EngineToGuest {
            continue;
        }
        let Ok(eth) = parse::ethernet(frame) else {
            continue;
        };
        if eth.ethertype != ethertype::IPV4 {
            continue;
        }
        let Ok(ip) = parse::ipv4(eth.payload) else {
            continue;
        };
        if ip.protocol != ip_proto::ICMP || ip.payload.len() < 8 || ip.payload[0] != 0 {
            continue;
        }
        let m = ip.payload;
        v.push((
            u16::from_be_bytes([m[4], m[5]]),
            u16::from_be_bytes([m[6], m[7]]),
        ));
    }
    v
}

/// The guest pings `dst` with identifier `id` and waits (a second at most) for the reply to
/// be passed on; returns whether it was.
fn ping(w: &mut World, dst: IpAddr, id: u16) -> bool {
    let before = w.counters().icmp.replies;
    w.guest_ping(HOST_ADDR.parse().unwrap(), dst, id, 1, b"payload");
    w.run_until(Duration::from_secs(1), |w| {
        w.counters().icmp.replies > before
    })
}

#[test]
fn more_echo_identifiers_than_the_table_holds_then_a_new_ping_is_answered() {
    let mut w = Scenario::new(45).build();
    let remote: IpAddr = REMOTE.parse().unwrap();
    w.host.ping_host(remote);
    let table = sans_io::flow::icmp::DEFAULT_MAX_FLOWS as u16;
    let ids = table + 76;
    for id in 1..=ids {
        assert!(
            ping(&mut w, remote, id),
            "ping {id}: {:?}",
            w.counters().icmp
        );
    }
    assert!(ping(&mut w, remote, 60_000));
    // The last reply's way to the guest.
    run_exactly(&mut w, Duration::from_millis(10));
    let got = echo_replies(&w);
    assert_eq!(got.len(), usize::from(ids) + 1);
    assert!((1..=ids).chain([60_000]).all(|id| got.contains(&(id, 1))));
    let c = &w.counters().icmp;
    assert_eq!(c.table_full, 0, "{c:?}");
    assert!(c.evicted >= u64::from(ids + 1 - table), "{c:?}");
    assert!(w.engine.icmp().len() <= usize::from(table));
}
