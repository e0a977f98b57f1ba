//! Flow control end to end: a slow reader on either side closes the window; nothing is lost.

use std::time::Duration;

use sim::capture::tcp_segments;
use sim::scenario::{addr, REMOTE};
use sim::world::Direction;
use sim::{App, Impair, Pattern, Scenario};

#[test]
fn slow_host_reader_closes_the_window() {
    let server = format!("{REMOTE}:19");
    let len = 1 << 20;
    let mut w = Scenario::new(31)
        .host(|h| {
            h.sndbuf = 32 * 1024;
            h.peer_rcvbuf = 32 * 1024;
        })
        // 2000 bytes a millisecond: about half a second for the mebibyte.
        .remote_server(&server, App::slow_sink(2000))
        .build();
    let c = w.guest_connect(addr(&server), App::source_pattern(Pattern(5), len));
    assert!(
        w.run_until_all_done(Duration::from_secs(120)),
        "{}",
        w.diagnose()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(5).check(h.received(), len).unwrap();
    assert!(
        w.now > sans_io::time::Instant::from_millis(400),
        "{:?}",
        w.now
    );
    // The engine told the guest to stop at some point.
    let zero = tcp_segments(&w.transcript)
        .iter()
        .filter(|s| s.dir == Direction::EngineToGuest && s.window == 0)
        .count();
    assert!(zero > 0, "no zero window advertised\n{}", w.diagnose());
    assert!(w.guest_conn(c).reset_at.is_none());
    w.assert_no_violations();
}

#[test]
fn slow_guest_reader_is_not_overrun() {
    let server = format!("{REMOTE}:19");
    let len = 1 << 20;
    let mut w = Scenario::new(32)
        .guest_buffer(16 * 1024)
        .remote_server(&server, App::source_pattern(Pattern(6), len))
        .build();
    let c = w.guest_connect(addr(&server), App::slow_sink(4000));
    assert!(
        w.run_until_all_done(Duration::from_secs(120)),
        "{}",
        w.diagnose()
    );
    Pattern(6).check(w.guest_conn(c).received(), len).unwrap();
    // The guest advertised a closed window at times; the engine never sent beyond it (smoltcp
    // would drop such data and the transfer still completes, so look at the wire).
    let segs = tcp_segments(&w.transcript);
    assert!(segs
        .iter()
        .any(|s| s.dir == Direction::GuestToEngine && s.window == 0));
    w.assert_no_violations();
}

#[test]
fn kernel_taking_less_than_it_said_loses_nothing() {
    // tcp_info promises 3000 bytes more than send() takes: partial writes.
    let server = format!("{REMOTE}:19");
    let len = 1 << 20;
    let mut w = Scenario::new(33)
        .host(|h| {
            h.sndbuf = 20_000;
            h.peer_rcvbuf = 16 * 1024;
            h.send_space_slack = 3000;
        })
        .remote_server(&server, App::slow_sink(3000))
        .build();
    w.guest_connect(addr(&server), App::source_pattern(Pattern(7), len));
    assert!(
        w.run_until_all_done(Duration::from_secs(1800)),
        "{}",
        w.diagnose()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(7).check(h.received(), len).unwrap();
    let t = &w.counters().tcp;
    assert!(t.stash_uses > 0 || t.no_room_drops > 0, "{}", w.diagnose());
    w.assert_no_violations();
}

#[test]
fn slow_readers_on_a_lossy_link() {
    let lossy = Impair {
        delay: Duration::from_micros(100),
        ..Impair::lossy(0.02)
    };
    // Zero windows both ways, with window updates lost now and then: probes must recover.
    let server = format!("{REMOTE}:19");
    let mut w = Scenario::new(34)
        .impair(lossy)
        .guest_buffer(8 * 1024)
        .host(|h| {
            h.sndbuf = 16 * 1024;
            h.peer_rcvbuf = 16 * 1024;
        })
        .remote_server(
            &server,
            App::slow_sink(3000).reply_after_eof(Pattern(11), 200_000),
        )
        .build();
    let c = w.guest_connect(
        addr(&server),
        App {
            read_rate: Some(3000),
            ..App::source_pattern(Pattern(10), 200_000)
        },
    );
    assert!(
        w.run_until_all_done(Duration::from_secs(1800)),
        "{}",
        w.diagnose()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(10).check(h.received(), 200_000).unwrap();
    Pattern(11)
        .check(w.guest_conn(c).received(), 200_000)
        .unwrap();
    w.assert_no_violations();
}

/// The host socket's advertised window follows the guest's (TCP_WINDOW_CLAMP): set when the
/// flow is established, again whenever the guest's window moves by more than 1 %, down to a
/// closed window and back; each bound is a window the guest advertised.
#[test]
fn host_window_follows_the_guests() {
    let server = format!("{REMOTE}:19");
    let len = 1 << 20;
    let mut w = Scenario::new(34)
        .guest_buffer(16 * 1024)
        .remote_server(&server, App::source_pattern(Pattern(7), len))
        .build();
    let c = w.guest_connect(addr(&server), App::slow_sink(4000));
    assert!(
        w.run_until_all_done(Duration::from_secs(120)),
        "{}",
        w.diagnose()
    );
    Pattern(7).check(w.guest_conn(c).received(), len).unwrap();
    let segs = tcp_segments(&w.transcript);
    let from_guest: Vec<_> = segs
        .iter()
        .filter(|s| s.dir == Direction::GuestToEngine)
        .collect();
    let scale = from_guest.iter().find_map(|s| s.wscale).unwrap_or(0);
    let advertised: Vec<u32> = from_guest
        .iter()
        .map(|s| {
            // A SYN's window is never scaled.
            let shift = if s.flags & 0x02 != 0 { 0 } else { scale };
            u32::from(s.window) << shift
        })
        .collect();
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    let clamps = &h.window_clamps;
    assert!(clamps.len() > 2, "{clamps:?}");
    // The first: the window of the ACK that completed the handshake.
    let first_ack = from_guest.iter().position(|s| s.flags & 0x02 == 0).unwrap();
    assert_eq!(clamps[0], advertised[first_ack], "{clamps:?}");
    for &c in clamps {
        assert!(
            advertised.contains(&c),
            "{c} never advertised: {advertised:?}"
        );
    }
    assert!(clamps.iter().any(|&c| c < 1000), "never closed: {clamps:?}");
    assert!(clamps.iter().any(|&c| c >= 8 * 1024), "{clamps:?}");
    for pair in clamps.windows(2) {
        let (a, b) = (u64::from(pair[0]), u64::from(pair[1]));
        assert!(a.abs_diff(b) * 100 > a, "a change within 1 %: {pair:?}");
    }
    w.assert_no_violations();
}

/// Host data that trickles in goes to the guest as it comes, also while what came before is
/// still unacknowledged: the guest delays its ACKs (smoltcp by 10 ms), and waiting for them
/// to look at the socket again held each millisecond's bytes back until then.
#[test]
fn host_data_trickling_in_is_not_held_for_the_guests_ack() {
    let server = format!("{REMOTE}:19");
    let (chunk, chunks) = (1000u64, 40u64);
    let mut w = Scenario::new(33)
        .remote_server(&server, App::paced_source(Pattern(8), chunk * chunks, 1000))
        .build();
    let c = w.guest_connect(addr(&server), App::sink());
    assert!(
        w.run_until_all_done(Duration::from_secs(10)),
        "{}",
        w.diagnose()
    );
    Pattern(8)
        .check(w.guest_conn(c).received(), chunk * chunks)
        .unwrap();
    // Each millisecond's chunk is a segment of its own, sent as soon as it arrives: as many
    // data segments as chunks, and the last one at the guest a link's crossing after the
    // source wrote it (the host's one-way latency, 0.5 ms, and ours), not an ACK delay later.
    let data: Vec<_> = tcp_segments(&w.transcript)
        .into_iter()
        .filter(|s| s.dir == Direction::EngineToGuest && s.payload_len > 0)
        .collect();
    assert!(
        data.len() as u64 >= chunks,
        "{} data segments for {chunks} chunks",
        data.len()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    let written = h.app.fin_at.expect("the source finished");
    let arrived = w.guest_conn(c).app.last_rx_at.expect("data arrived");
    let lag = arrived.saturating_since(written);
    assert!(
        lag <= Duration::from_millis(2),
        "the last chunk arrived {lag:?} after"
    );
}
