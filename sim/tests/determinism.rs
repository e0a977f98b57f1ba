//! The same seed gives a byte-identical capture of a whole run: a guest configuring itself by
//! DHCP and SLAAC, TCP both ways, UDP and pings of both families, over a link that loses,
//! reorders, duplicates, delays and truncates frames in both directions. Another seed gives
//! another run.

use std::net::IpAddr;
use std::time::Duration;

use sim::fields::{self, L4};
use sim::scenario::{addr, REMOTE};
use sim::world::Direction;
use sim::{App, Impair, Pattern, Scenario};

fn run(seed: u64) -> (Vec<u8>, u64, String) {
    let mut w = Scenario::new(seed)
        .dhcp()
        .impair(Impair {
            loss: 0.02,
            reorder: 0.02,
            duplicate: 0.02,
            truncate: 0.01,
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(100),
            ..Impair::default()
        })
        .remote_server(&format!("{REMOTE}:7"), App::echo())
        .remote_server(
            &format!("{REMOTE}:19"),
            App::source_pattern(Pattern(3), 60_000),
        )
        .build();
    let remote: IpAddr = REMOTE.parse().unwrap();
    let remote6: IpAddr = "2001:db8:2::10".parse().unwrap();
    w.host.udp_echo(addr(&format!("{REMOTE}:9")));
    w.host.udp_echo(addr("[2001:db8:2::10]:9"));
    w.host.ping_host(remote);
    w.host.ping_host(remote6);
    // DHCP first: the guest has no address yet.
    w.run_for(Duration::from_secs(5));
    w.guest_connect(
        addr(&format!("{REMOTE}:7")),
        App::source_pattern(Pattern(1), 40_000),
    );
    w.guest_connect(addr(&format!("{REMOTE}:19")), App::sink());
    let me4: IpAddr = "198.51.100.2".parse().unwrap();
    let me6: IpAddr = w
        .guest
        .global_ipv6()
        .first()
        .map(|a| IpAddr::V6(*a))
        .unwrap_or(remote6);
    for i in 0..5u16 {
        w.guest_udp(
            addr(&format!("{me4}:{}", 4000 + i)),
            addr(&format!("{REMOTE}:9")),
            b"datagram",
        );
        w.guest_udp(
            std::net::SocketAddr::new(me6, 5000 + i),
            addr("[2001:db8:2::10]:9"),
            b"datagram6",
        );
        w.guest_ping(me4, remote, 77, i, b"ping");
        w.guest_ping(me6, remote6, 78, i, b"ping6");
    }
    assert!(
        w.run_until_all_done(Duration::from_secs(600)),
        "{}",
        w.diagnose()
    );
    // Everything happened, impairments or not.
    let (mut udp, mut echo) = (0, 0);
    for (_, dir, f) in &w.transcript {
        if *dir == Direction::EngineToGuest {
            match fields::decode(f).l4 {
                Some(L4::Udp { src, .. }) if src.port() == 9 => udp += 1,
                Some(L4::Echo { reply: true, .. }) => echo += 1,
                _ => {}
            }
        }
    }
    assert!(
        udp >= 5 && echo >= 5,
        "{udp} datagrams, {echo} echo replies"
    );
    let truncated = w.to_engine.stats.truncated + w.to_guest.stats.truncated;
    (w.pcap(), truncated, w.diagnose())
}

#[test]
fn same_seed_same_capture_byte_for_byte() {
    let (a, truncated, diag) = run(11);
    assert!(a.len() > 100_000, "a short run: {diag}");
    assert!(truncated > 0, "{diag}");
    let (b, _, _) = run(11);
    assert!(a == b, "two runs with seed 11 differ");
    let (c, _, _) = run(12);
    assert!(a != c, "the seed changes nothing");
}
