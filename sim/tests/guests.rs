//! More than one guest: three namespaces, each behind a pasta of its own, on one host (as
//! with several rootless containers). Their engines share the virtual host, and each engine
//! hears only about its own sockets.

use std::time::Duration;

use sim::scenario::{addr, REMOTE};
use sim::{App, Impair, Pattern, Scenario};

#[test]
fn three_guests_download_at_once_from_one_server() {
    let server = format!("{REMOTE}:80");
    let mut w = Scenario::new(21)
        .more_guests(2)
        .impair(Impair {
            delay: Duration::from_micros(100),
            ..Impair::lossy(0.01)
        })
        .remote_server(&server, App::source_pattern(Pattern(5), 200_000))
        .build();
    let main = w.guest_connect(addr(&server), App::sink());
    let others: Vec<_> = (0..2)
        .map(|i| w.others[i].guest.tcp_connect(addr(&server), App::sink()))
        .collect();
    assert!(
        w.run_until_all_done(Duration::from_secs(600)),
        "{}",
        w.diagnose()
    );
    Pattern(5)
        .check(w.guest_conn(main).received(), 200_000)
        .unwrap();
    for (i, c) in others.into_iter().enumerate() {
        Pattern(5)
            .check(w.others[i].guest.conn(c).received(), 200_000)
            .unwrap_or_else(|e| panic!("guest {}: {e}", i + 1));
        assert!(w.others[i].engine.counters().tcp.resets_sent == 0);
        assert!(!w.others[i].transcript.is_empty());
    }
    assert_eq!(w.host.conns_to(addr(&server)).len(), 3);
    w.assert_no_violations();
}
