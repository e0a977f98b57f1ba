//! A full flow table: new connections are reset and counted, nothing panics, and room made by
//! closed flows is reused.

use std::time::Duration;

use sim::scenario::{addr, REMOTE};
use sim::{App, Pattern, Scenario};

#[test]
fn full_table_resets_new_connections() {
    let server = format!("{REMOTE}:9");
    let mut w = Scenario::new(71)
        .engine(|e| e.max_tcp_flows = 4)
        .remote_server(&server, App::sink())
        .build();
    let held: Vec<_> = (0..4)
        .map(|_| w.guest_connect(addr(&server), App::idle()))
        .collect();
    assert!(w.run_until(Duration::from_secs(5), |w| held
        .iter()
        .all(|&c| w.guest_conn(c).established_at.is_some())));
    let extra: Vec<_> = (0..3)
        .map(|_| w.guest_connect(addr(&server), App::sink()))
        .collect();
    let refused = w.run_until(Duration::from_secs(5), |w| {
        extra.iter().all(|&c| w.guest_conn(c).reset_at.is_some())
    });
    assert!(refused, "{}", w.diagnose());
    assert_eq!(w.counters().tcp.table_full, 3, "{}", w.diagnose());
    assert_eq!(w.counters().tcp.flows, 4);
    assert_eq!(w.host.stats.connects, 4, "no host socket for refused flows");
    // The held connections still work.
    for &c in &held {
        w.guest.tcp_shutdown(c);
    }
    let closed = w.run_until(Duration::from_secs(60), |w| {
        w.host.open_sockets() == 0 && w.counters().tcp.flows == 0
    });
    assert!(closed, "{}", w.diagnose());
    // And the table has room again.
    let again = w.guest_connect(addr(&server), App::source_pattern(Pattern(9), 10_000));
    assert!(
        w.run_until(Duration::from_secs(60), |w| w.guest_conn(again).done()),
        "{}",
        w.diagnose()
    );
    let h = w.host.conns_to(addr(&server));
    Pattern(9)
        .check(w.host_conn(*h.last().unwrap()).received(), 10_000)
        .unwrap();
    w.assert_no_violations();
}

#[test]
fn full_table_refuses_inbound_connections() {
    let mut w = Scenario::new(72)
        .engine(|e| e.max_tcp_flows = 2)
        .forward_tcp("8080")
        .build();
    for _ in 0..2 {
        w.guest_listen(8080, App::idle());
    }
    let clients: Vec<_> = (0..4)
        .map(|i| {
            w.remote_connect(
                addr(&format!("203.0.113.20:{}", 40000 + i)),
                addr("198.51.100.2:8080"),
                App::idle(),
            )
        })
        .collect();
    let settled = w.run_until(Duration::from_secs(10), |w| {
        w.counters().tcp.table_full == 2
            && clients[2..]
                .iter()
                .all(|&c| w.host_conn(c).peer_reset_at.is_some())
    });
    assert!(settled, "{}", w.diagnose());
    assert_eq!(w.counters().tcp.flows, 2);
    assert_eq!(w.host.open_sockets(), 2);
    w.assert_no_violations();
}
