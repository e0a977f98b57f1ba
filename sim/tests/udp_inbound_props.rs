//! UDP exchanges begun on a forwarding listener, under random interleavings (property test
//! over operation sequences): peers sending bursts, the guest answering some of them, the
//! guest moving to another address, time passing (never long enough for a flow to expire).
//! Whatever the order, every datagram of every peer reaches the guest exactly once and in
//! the peer's order, whether its flow is still on the listener or has its own socket by
//! then (a conversation), and the table's bookkeeping holds (its debug assertions, the
//! simulator's checks). The fuzzer found the guest's move breaking the latter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::Scenario;

#[derive(Debug, Clone)]
enum Op {
    /// Peer `p` sends `n` datagrams.
    Send { p: usize, n: usize },
    /// The guest answers peer `p`, from the address it has now.
    Answer { p: usize },
    /// The guest moves to address `a` (one of a few).
    Move { a: usize },
    /// Time passes: `ms` milliseconds.
    Wait { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, 1..8usize).prop_map(|(p, n)| Op::Send { p, n }),
        3 => (0..5usize).prop_map(|p| Op::Answer { p }),
        1 => (0..3usize).prop_map(|a| Op::Move { a }),
        2 => (0..300u64).prop_map(|ms| Op::Wait { ms }),
    ]
}

const PORT: u16 = 5000;

fn guest_at(a: usize) -> SocketAddr {
    let ip = match a {
        0 => HOST_ADDR.to_string(),
        n => format!("198.51.100.{}", 70 + n),
    };
    addr(&format!("{ip}:{PORT}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_peers_datagrams_reach_the_guest_once_in_order(
        seed in 0u64..1000,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut w = Scenario::new(seed).forward_udp(&PORT.to_string()).build();
        let peers: Vec<SocketAddr> = (0..5)
            .map(|i| addr(&format!("{REMOTE}:{}", 7000 + i)))
            .collect();
        let mut sent: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
        let mut here = guest_at(0);
        let mut count = 0;
        for op in &ops {
            match *op {
                Op::Send { p, n } => {
                    for _ in 0..n {
                        count += 1;
                        let payload = format!("{} #{count}", peers[p]).into_bytes();
                        prop_assert!(w.host.remote_udp_send(peers[p], guest_at(0), &payload));
                        sent.entry(peers[p]).or_default().push(payload);
                    }
                }
                Op::Answer { p } => w.guest_udp(here, peers[p], b"answer"),
                Op::Move { a } => {
                    here = guest_at(a);
                    w.guest_udp(here, addr(&format!("{REMOTE}:9")), b"moved");
                }
                Op::Wait { ms } => w.run_for(Duration::from_millis(ms)),
            }
            w.run_for(Duration::from_millis(1));
        }
        let total: usize = sent.values().map(Vec::len).sum();
        prop_assert!(w.run_until(Duration::from_secs(2), |w| w.udp_at_guest().len() >= total));
        w.run_for(Duration::from_millis(100));
        let mut got: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
        for (src, _, payload) in w.udp_at_guest() {
            got.entry(src).or_default().push(payload);
        }
        prop_assert_eq!(got, sent);
        w.assert_no_violations();
    }
}
