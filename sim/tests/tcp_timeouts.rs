//! A guest that goes silent: the engine gives up after its retransmissions, frees the flow
//! and resets the host side.

use std::time::Duration;

use sim::scenario::{addr, REMOTE};
use sim::{App, Scenario};

#[test]
fn guest_that_stops_acking_is_timed_out_and_freed() {
    let server = format!("{REMOTE}:19");
    let mut w = Scenario::new(61)
        .remote_server(&server, App::source(1 << 30))
        .build();
    let c = w.guest_connect(addr(&server), App::sink());
    assert!(
        w.run_until(Duration::from_secs(5), |w| w.guest_conn(c).received().len()
            > 50_000)
    );
    assert_eq!(w.counters().tcp.flows, 1);
    // The guest's frames no longer reach the engine.
    w.to_engine.cut = true;
    let t0 = w.now;
    let freed = w.run_until(Duration::from_secs(3600), |w| {
        w.counters().tcp.flows == 0 && w.host.open_sockets() == 0
    });
    assert!(freed, "{}", w.diagnose());
    let waited = w.now - t0;
    // Retransmissions back off (1 s doubling, at most 60 s) before giving up: minutes, not
    // hours.
    assert!(
        waited > Duration::from_secs(30) && waited < Duration::from_secs(600),
        "{waited:?}"
    );
    let t = &w.counters().tcp;
    assert_eq!(t.timeouts, 1, "{}", w.diagnose());
    assert!(t.retransmissions >= 3, "{}", w.diagnose());
    // The reset reaches the remote a host latency later.
    w.run_for(Duration::from_millis(10));
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    assert_eq!(
        h.closed_by_engine.map(|c| c.1),
        Some(true),
        "the host side is reset"
    );
    assert!(h.peer_reset_at.is_some(), "{}", w.diagnose());
    w.assert_no_violations();
}

#[test]
fn idle_connection_survives_quiet_periods() {
    // Nothing to send either way for ten minutes: no retransmission timer runs, the flow stays.
    let server = format!("{REMOTE}:9");
    let mut w = Scenario::new(62)
        .remote_server(&server, App::sink())
        .build();
    let c = w.guest_connect(addr(&server), App::idle());
    assert!(w.run_until(Duration::from_secs(5), |w| w
        .guest_conn(c)
        .established_at
        .is_some()));
    w.run_for(Duration::from_secs(600));
    assert_eq!(w.counters().tcp.flows, 1, "{}", w.diagnose());
    assert_eq!(w.counters().tcp.timeouts, 0);
    assert_eq!(w.host.open_sockets(), 1);
    w.assert_no_violations();
}
