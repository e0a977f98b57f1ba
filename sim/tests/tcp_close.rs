//! Closing: half-closes both ways, resets both ways, refused and unanswered connects.

use std::time::Duration;

use sim::capture::{flags, tcp_segments};
use sim::scenario::{addr, REMOTE};
use sim::world::Direction;
use sim::{App, Pattern, Scenario};

#[test]
fn guest_half_closes_then_the_remote_answers() {
    // The guest sends and closes its direction; the remote reads to the end, then replies.
    let server = format!("{REMOTE}:80");
    let mut w = Scenario::new(21)
        .remote_server(&server, App::sink().reply_after_eof(Pattern(2), 200_000))
        .build();
    let c = w.guest_connect(addr(&server), App::source_pattern(Pattern(1), 100_000));
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(1).check(h.received(), 100_000).unwrap();
    let g = w.guest_conn(c);
    Pattern(2).check(g.received(), 200_000).unwrap();
    // Everything the guest got came after its FIN.
    assert!(g.app.fin_at.unwrap() < g.app.last_rx_at.unwrap());
    w.assert_no_violations();
}

#[test]
fn remote_half_closes_then_the_guest_answers() {
    let server = format!("{REMOTE}:80");
    let mut w = Scenario::new(22)
        .remote_server(&server, App::source_pattern(Pattern(3), 100_000))
        .build();
    let c = w.guest_connect(
        addr(&server),
        App::sink().reply_after_eof(Pattern(4), 200_000),
    );
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    let g = w.guest_conn(c);
    Pattern(3).check(g.received(), 100_000).unwrap();
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(4).check(h.received(), 200_000).unwrap();
    assert!(h.app.fin_at.unwrap() < h.app.last_rx_at.unwrap());
    w.assert_no_violations();
}

#[test]
fn guest_reset_reaches_the_remote() {
    let server = format!("{REMOTE}:9");
    let mut w = Scenario::new(23)
        .remote_server(&server, App::sink())
        .build();
    let c = w.guest_connect(addr(&server), App::source(1 << 30).no_fin());
    w.run_until(Duration::from_secs(5), |w| {
        w.guest_conn(c).app.sent > 100_000
    });
    let t0 = w.now;
    w.guest.tcp_abort(c);
    let h = w.host.conns_to(addr(&server))[0];
    let reset = w.run_until(Duration::from_secs(5), |w| {
        w.host_conn(h).peer_reset_at.is_some() && w.host.open_sockets() == 0
    });
    assert!(reset, "{}", w.diagnose());
    assert!(w.now - t0 < Duration::from_millis(100), "{}", w.diagnose());
    assert_eq!(w.host_conn(h).closed_by_engine.map(|c| c.1), Some(true));
    w.assert_no_violations();
}

#[test]
fn remote_reset_reaches_the_guest() {
    let server = format!("{REMOTE}:9");
    let mut w = Scenario::new(24)
        .remote_server(&server, App::sink().reset_after(50_000))
        .build();
    let c = w.guest_connect(addr(&server), App::source(1 << 30).no_fin());
    let reset = w.run_until(Duration::from_secs(10), |w| {
        w.guest_conn(c).reset_at.is_some() && w.host.open_sockets() == 0
    });
    assert!(reset, "{}", w.diagnose());
    w.assert_no_violations();
}

#[test]
fn refused_connect_is_a_quick_reset() {
    let mut w = Scenario::new(25).reachable(REMOTE).build();
    let c = w.guest_connect(addr(&format!("{REMOTE}:81")), App::sink());
    let t0 = w.now;
    let refused = w.run_until(Duration::from_secs(5), |w| {
        w.guest_conn(c).reset_at.is_some()
    });
    assert!(refused, "{}", w.diagnose());
    // A host round trip (1 ms) plus the link: a few virtual milliseconds.
    assert!(w.now - t0 < Duration::from_millis(20), "{:?}", w.now - t0);
    assert!(w.guest_conn(c).established_at.is_none());
    assert_eq!(w.host.stats.refused, 1);
    assert_eq!(w.host.open_sockets(), 0, "{}", w.diagnose());
    let rst = tcp_segments(&w.transcript)
        .into_iter()
        .any(|s| s.dir == Direction::EngineToGuest && s.has(flags::RST));
    assert!(rst);
    w.assert_no_violations();
}

#[test]
fn unanswered_connect_fails_after_the_host_gives_up() {
    let mut w = Scenario::new(26)
        .host(|h| h.connect_timeout = Duration::from_millis(2500))
        .build();
    let c = w.guest_connect(addr("192.0.2.99:80"), App::sink());
    let failed = w.run_until(Duration::from_secs(60), |w| {
        w.guest_conn(c).closed() && w.host.open_sockets() == 0
    });
    assert!(failed, "{}", w.diagnose());
    assert!(w.guest_conn(c).established_at.is_none());
    assert!(w.guest_conn(c).reset_at.is_some());
    assert_eq!(w.host.stats.timed_out, 1);
    assert_eq!(w.host.stats.connects, 1, "{}", w.diagnose());
    assert_eq!(w.counters().tcp.flows, 0);
    w.assert_no_violations();
}

#[test]
fn syn_crossing_the_reset_costs_one_more_connect_at_most() {
    // The host gives up exactly when the guest retransmits its SYN (1 s, then 2 s): the
    // retransmission crosses our RST and opens a second attempt, which must end too.
    let mut w = Scenario::new(27)
        .host(|h| h.connect_timeout = Duration::from_secs(3))
        .build();
    let c = w.guest_connect(addr("192.0.2.99:80"), App::sink());
    let over = w.run_until(Duration::from_secs(60), |w| {
        w.guest_conn(c).closed() && w.host.open_sockets() == 0 && w.counters().tcp.flows == 0
    });
    assert!(over, "{}", w.diagnose());
    assert!(w.host.stats.connects <= 2, "{}", w.diagnose());
    w.assert_no_violations();
}
