//! Many concurrent connections, each with its own bytes.

use std::time::Duration;

use sim::scenario::{addr, REMOTE};
use sim::{App, Impair, Pattern, Scenario};

fn concurrent(seed: u64, impair: Impair, flows: u64, len: u64) {
    let server = format!("{REMOTE}:7");
    let mut w = Scenario::new(seed)
        .impair(impair)
        .remote_server(&server, App::echo())
        .build();
    let ids: Vec<_> = (0..flows)
        .map(|i| w.guest_connect(addr(&server), App::source_pattern(Pattern(100 + i), len)))
        .collect();
    let done = w.run_until_all_done(Duration::from_secs(1800));
    assert!(done, "{}", w.diagnose());
    for (i, &c) in ids.iter().enumerate() {
        Pattern(100 + i as u64)
            .check(w.guest_conn(c).received(), len)
            .unwrap_or_else(|e| panic!("flow {i}: {e}\n{}", w.diagnose()));
    }
    assert_eq!(w.host.conns().len() as u64, flows);
    assert_eq!(w.host.open_sockets(), 0);
    w.assert_no_violations();
}

#[test]
fn fifty_echo_flows() {
    concurrent(11, Impair::delay(Duration::from_micros(50)), 50, 64 * 1024);
}

#[test]
fn fifty_echo_flows_lossy() {
    concurrent(
        12,
        Impair {
            delay: Duration::from_micros(100),
            ..Impair::lossy(0.01)
        },
        50,
        32 * 1024,
    );
}
