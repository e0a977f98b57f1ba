//! A smoltcp guest configures itself through our engine: its IPv4 lease over DHCP, its global
//! IPv6 address from our router advertisements (SLAAC).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use sans_io::config::{Mode, NetOptions};
use sim::scenario::standard_lab;
use sim::world::World;

const GUEST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

fn world(mode: Mode, seed: u64) -> World {
    let config = standard_lab()
        .derive(&NetOptions::new(mode))
        .unwrap()
        .config;
    World::new(config, seed, GUEST_MAC)
}

#[test]
fn guest_gets_its_ipv4_lease() {
    let mut w = world(Mode::Passt, 1);
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.guest.lease.is_some()),
        "no lease"
    );
    let lease = w.guest.lease.clone().unwrap();
    assert_eq!(lease.address.address(), Ipv4Addr::new(198, 51, 100, 2));
    assert_eq!(lease.address.prefix_len(), 24);
    assert_eq!(lease.router, Some(Ipv4Addr::new(198, 51, 100, 1)));
    // passt hands DNS out by default.
    assert_eq!(lease.dns_servers, [Ipv4Addr::new(203, 0, 113, 53)]);
    assert!(
        w.engine.counters().dhcp_answered >= 2,
        "{:?}",
        w.engine.counters()
    );
    assert_eq!(
        w.engine.counters().malformed,
        0,
        "{:?}",
        w.engine.counters()
    );
}

#[test]
fn guest_forms_its_ipv6_address_by_slaac() {
    let mut w = world(Mode::Pasta, 2);
    let done = w.run_until(Duration::from_secs(30), |w| {
        !w.guest.global_ipv6().is_empty()
    });
    assert!(done, "no SLAAC address; counters {:?}", w.engine.counters());
    let addr: Ipv6Addr = w.guest.global_ipv6()[0];
    // SLAAC forms its address in our advertised prefix, the host's /64.
    assert_eq!(addr.segments()[..4], [0x2001, 0xdb8, 1, 0]);
    assert!(w.engine.counters().ndp_answered >= 1);
}

#[test]
fn same_seed_same_transcript() {
    let run = |seed| {
        let mut w = world(Mode::Passt, seed);
        w.run_until(Duration::from_secs(900), |_| false);
        w.transcript
    };
    let a = run(7);
    assert!(!a.is_empty());
    assert_eq!(a, run(7));
}
