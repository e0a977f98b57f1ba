//! Idle flows cost nothing: a flow with nothing to send and nothing in flight is woken only by
//! its socket or its own (rare) timer, never polled.

use std::time::Duration;

use sim::capture::tcp_segments;
use sim::scenario::{addr, REMOTE};
use sim::{App, Scenario};

/// Many flows that each carried a byte each way and then sit idle, with a host send buffer
/// smaller than one of the guest's segments (a fresh socket's, against a 65520-byte MTU):
/// the window we offer stays below a segment, which must not be taken for a guest waiting.
#[test]
fn a_thousand_idle_flows_make_no_socket_calls_for_a_minute() {
    const FLOWS: usize = 1000;
    let server = format!("{REMOTE}:7");
    let mut w = Scenario::new(41)
        .mtu(65520)
        .guest_mtu(65520)
        .guest_buffer(4096)
        .host(|h| {
            h.sndbuf = 16 * 1024;
            h.max_sockets = 2 * FLOWS;
        })
        .remote_server(&server, App::echo())
        .build();
    let ids: Vec<_> = (0..FLOWS)
        .map(|_| w.guest_connect(addr(&server), App::source(1).no_fin()))
        .collect();
    let echoed = w.run_until(Duration::from_secs(60), |w| {
        ids.iter().all(|&c| w.guest_conn(c).received().len() == 1)
    });
    assert!(echoed, "not every flow got its byte back\n{}", w.diagnose());
    // Let the last ACKs and any timer left from the exchange (the first retransmission
    // timeout, a second later) pass.
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.engine.tcp().len(), FLOWS);

    let calls = w.host.stats.calls;
    let events = w.host.stats.events;
    let steps = w.stats.steps;
    let frames = w.transcript.len();
    w.run_for(Duration::from_secs(60));
    assert_eq!(
        w.host.stats.calls - calls,
        0,
        "idle flows made host socket calls\n{}",
        w.diagnose()
    );
    assert_eq!(w.host.stats.events - events, 0, "socket events while idle");
    // Nothing on the wire either (the periodic router advertisement aside).
    let segments = tcp_segments(&w.transcript[frames..]).len();
    assert_eq!(segments, 0, "TCP segments while idle");
    assert!(
        w.stats.steps - steps < 10,
        "the world stepped {} times in an idle minute",
        w.stats.steps - steps
    );
    // And every flow still works afterwards.
    assert_eq!(w.engine.tcp().len(), FLOWS);
    w.assert_no_violations();
}

/// A flow whose peer stopped reading: the guest has filled every window we offered and waits
/// (probing now and then). A stalled flow must not cost a busy loop either.
#[test]
fn a_stalled_upload_costs_next_to_nothing() {
    let server = format!("{REMOTE}:9");
    let len = 4 << 20;
    let mut w = Scenario::new(42)
        .host(|h| {
            h.sndbuf = 64 * 1024;
            h.peer_rcvbuf = 64 * 1024;
        })
        .remote_server(&server, App::idle())
        .build();
    let c = w.guest_connect(addr(&server), App::source(len));
    w.run_for(Duration::from_secs(5));
    let calls = w.host.stats.calls;
    w.run_for(Duration::from_secs(60));
    let stalled_calls = w.host.stats.calls - calls;
    // What the guest's own window probes bring (31 here), or room measurements backed off
    // to one every quarter second (240 a minute); every 2 ms would be 30,000.
    assert!(
        stalled_calls < 1500,
        "{stalled_calls} socket calls in a stalled minute\n{}",
        w.diagnose()
    );
    assert!(w.guest_conn(c).reset_at.is_none());
    w.assert_no_violations();
}
