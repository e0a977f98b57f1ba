//! Connections from the outside to forwarded ports, into servers in the guest.

use std::time::Duration;

use sim::scenario::{addr, HOST_ADDR};
use sim::{App, Impair, Pattern, Scenario};

#[test]
fn forwarded_connection_carries_data_both_ways() {
    let mut w = Scenario::new(41).forward_tcp("8080").build();
    let g = w.guest_listen(8080, App::source_pattern(Pattern(21), 300_000));
    let h = w.remote_connect(
        addr("203.0.113.20:40000"),
        addr(&format!("{HOST_ADDR}:8080")),
        App::source_pattern(Pattern(22), 500_000),
    );
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    Pattern(22)
        .check(w.guest_conn(g).received(), 500_000)
        .unwrap();
    Pattern(21)
        .check(w.host_conn(h).received(), 300_000)
        .unwrap();
    // The guest sees the remote client's address.
    assert_eq!(w.guest_conn(g).remote, Some(addr("203.0.113.20:40000")));
    w.assert_no_violations();
}

#[test]
fn forwarded_port_mapping_and_loss() {
    // A loopback client through the tap: the loopback bypass off.
    let mut w = Scenario::new(42)
        .options(|o| o.no_splice = true)
        .forward_tcp("2222:22")
        .impair(Impair {
            delay: Duration::from_micros(100),
            ..Impair::lossy(0.02)
        })
        .build();
    let g = w.guest_listen(22, App::echo());
    let h = w.remote_connect(
        addr("127.0.0.1:50000"),
        addr("127.0.0.1:2222"),
        App::source_pattern(Pattern(23), 200_000),
    );
    assert!(
        w.run_until_all_done(Duration::from_secs(1800)),
        "{}",
        w.diagnose()
    );
    Pattern(23)
        .check(w.host_conn(h).received(), 200_000)
        .unwrap();
    Pattern(23)
        .check(w.guest_conn(g).received(), 200_000)
        .unwrap();
    w.assert_no_violations();
}

#[test]
fn nobody_listening_in_the_guest_resets_the_client() {
    let mut w = Scenario::new(43).forward_tcp("8080").build();
    let h = w.remote_connect(
        addr("203.0.113.20:40000"),
        addr(&format!("{HOST_ADDR}:8080")),
        App::source(1000),
    );
    let reset = w.run_until(Duration::from_secs(10), |w| {
        w.host_conn(h).peer_reset_at.is_some() || w.host_conn(h).finished()
    });
    assert!(reset, "{}", w.diagnose());
    assert_eq!(w.host.open_sockets(), 0, "{}", w.diagnose());
    w.assert_no_violations();
}

#[test]
fn forwarded_connection_over_ipv6() {
    let mut w = Scenario::new(44).forward_tcp("8080").build();
    let g = w.guest_listen(8080, App::sink().reply_after_eof(Pattern(25), 100_000));
    let h = w.remote_connect(
        addr("[2001:db8:2::20]:40000"),
        addr("[2001:db8:1::2]:8080"),
        App::source_pattern(Pattern(24), 100_000),
    );
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    Pattern(24)
        .check(w.guest_conn(g).received(), 100_000)
        .unwrap();
    Pattern(25)
        .check(w.host_conn(h).received(), 100_000)
        .unwrap();
    assert_eq!(w.guest_conn(g).remote, Some(addr("[2001:db8:2::20]:40000")));
    w.assert_no_violations();
}

#[test]
fn many_inbound_connections() {
    let mut w = Scenario::new(45).forward_tcp("8080").build();
    let gs: Vec<_> = (0..10).map(|_| w.guest_listen(8080, App::echo())).collect();
    let hs: Vec<_> = (0..10u16)
        .map(|i| {
            w.remote_connect(
                addr(&format!("203.0.113.20:{}", 40000 + i)),
                addr(&format!("{HOST_ADDR}:8080")),
                App::source_pattern(Pattern(30 + u64::from(i)), 50_000),
            )
        })
        .collect();
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    for (i, &h) in hs.iter().enumerate() {
        Pattern(30 + i as u64)
            .check(w.host_conn(h).received(), 50_000)
            .unwrap();
    }
    assert!(gs.iter().all(|&g| w.guest_conn(g).done()));
    w.assert_no_violations();
}
