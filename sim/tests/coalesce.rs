//! Guest data coalesced per read, in the simulator: the same world with the guest's frames
//! handed to the engine one by one (`World::one_by_one`) is the reference. TCP: a bulk upload
//! into a small send buffer (partial writes mid-batch) gives the same frames both ways, byte
//! for byte, in fewer host calls. UDP: datagrams of several flows go out the same per flow,
//! counted the same, in fewer calls (property test over seeds).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::world::World;
use sim::{App, Pattern, Scenario};

fn bulk_upload(seed: u64, one_by_one: bool, len: u64) -> World {
    let server = format!("{REMOTE}:19");
    let mut w = Scenario::new(seed)
        .host(|h| {
            // The room said is 3000 bytes more than a send takes: partial writes.
            h.sndbuf = 20_000;
            h.peer_rcvbuf = 16 * 1024;
            h.send_space_slack = 3000;
        })
        .remote_server(&server, App::slow_sink(20_000))
        .build();
    w.one_by_one = one_by_one;
    w.guest_connect(addr(&server), App::source_pattern(Pattern(9), len));
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(9).check(h.received(), len).unwrap();
    w.assert_no_violations();
    w
}

#[test]
fn a_bulk_upload_is_the_same_frame_for_frame_in_fewer_calls() {
    let len = 1 << 20;
    let (batched, single) = (bulk_upload(71, false, len), bulk_upload(71, true, len));
    assert_eq!(batched.counters(), single.counters());
    assert!(
        batched.transcript == single.transcript,
        "the frames differ ({} and {})",
        batched.transcript.len(),
        single.transcript.len()
    );
    let c = &batched.counters().tcp;
    assert!(
        c.stash_uses > 0 && c.no_room_drops > 0,
        "no partial write or drop to test: {c:?}"
    );
    let (b, s) = (&batched.host.stats, &single.host.stats);
    assert!(b.vectored_sends > 0);
    assert_eq!(s.vectored_sends, 0);
    assert!(b.calls < s.calls, "{} calls against {}", b.calls, s.calls);
}

/// The datagrams the host got, per (socket's local address, destination), in order.
fn per_flow(w: &World) -> BTreeMap<(SocketAddr, SocketAddr), Vec<Vec<u8>>> {
    let mut m: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (local, dst, d) in &w.host.udp_log {
        m.entry((*local, *dst)).or_default().push(d.clone());
    }
    m
}

fn udp_world(seed: u64, one_by_one: bool, sends: &[(u16, u16, usize)]) -> World {
    let mut w = Scenario::new(seed).build();
    w.one_by_one = one_by_one;
    for port in 1..=3 {
        w.host.udp_echo(addr(&format!("{REMOTE}:{port}")));
    }
    for (i, &(from, to, len)) in sends.iter().enumerate() {
        let src = SocketAddr::new(HOST_ADDR.parse().unwrap(), 40000 + from);
        let dst = addr(&format!("{REMOTE}:{to}"));
        let payload: Vec<u8> = (0..len).map(|k| (k + i) as u8).collect();
        w.guest_udp(src, dst, &payload);
    }
    w.run_for(Duration::from_millis(200));
    w.assert_no_violations();
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn datagrams_of_a_read_do_what_they_do_one_by_one(
        seed in 0u64..1000,
        sends in prop::collection::vec((0u16..3, 1u16..4, 1usize..1400), 1..80),
    ) {
        let (b, s) = (udp_world(seed, false, &sends), udp_world(seed, true, &sends));
        prop_assert_eq!(per_flow(&b), per_flow(&s));
        prop_assert_eq!(b.counters(), s.counters());
        prop_assert_eq!(b.counters().udp.datagrams_out, sends.len() as u64);
        let mut at_guest = (b.udp_at_guest(), s.udp_at_guest());
        at_guest.0.sort();
        at_guest.1.sort();
        prop_assert_eq!(at_guest.0, at_guest.1);
        prop_assert!(b.host.stats.vectored_sends > 0);
        prop_assert_eq!(s.host.stats.vectored_sends, 0);
        prop_assert!(b.host.stats.calls <= s.host.stats.calls);
    }
}
