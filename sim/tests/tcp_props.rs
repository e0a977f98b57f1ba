//! For any impairments (within reason), the bytes arrive intact both ways.

use std::time::Duration;

use proptest::prelude::*;
use sim::rng::SimRng;
use sim::scenario::{addr, REMOTE};
use sim::{App, Impair, Pattern, Scenario};

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn bytes_arrive_intact(
        seed in any::<u64>(),
        loss in 0.0..0.05f64,
        reorder in 0.0..0.05f64,
        duplicate in 0.0..0.05f64,
        delay_us in 10u64..2000,
        jitter_us in 0u64..500,
    ) {
        let server = format!("{REMOTE}:7");
        let impair = Impair {
            loss,
            reorder,
            duplicate,
            delay: Duration::from_micros(delay_us),
            jitter: Duration::from_micros(jitter_us),
            ..Impair::default()
        };
        let mut w = Scenario::new(seed)
            .impair(impair)
            .remote_server(&server, App::echo())
            .build();
        let c = w.guest_connect(addr(&server), App::source_pattern(Pattern(seed), 64 * 1024));
        let done = w.run_until_all_done(Duration::from_secs(1800));
        prop_assert!(done, "{}", w.diagnose());
        let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
        prop_assert!(Pattern(seed).check(h.received(), 64 * 1024).is_ok(), "{}", w.diagnose());
        prop_assert!(Pattern(seed).check(w.guest_conn(c).received(), 64 * 1024).is_ok(), "{}", w.diagnose());
        prop_assert!(w.host.violations.is_empty(), "{}", w.diagnose());
    }
}

/// A random application.
fn random_app(r: &mut SimRng, salt: u64) -> App {
    let len = 1 + r.below(200_000);
    let app = match r.below(5) {
        0 => App::sink(),
        1 => App::source_pattern(Pattern(salt), len),
        2 => App::echo(),
        3 => App::sink().reply_after_eof(Pattern(salt), len),
        _ => App::slow_sink(1 + r.below(5000) as usize),
    };
    if r.chance(0.2) {
        app.reset_after(r.below(100_000))
    } else {
        app
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random applications both ways, inbound and outbound, refused ports, a random abort,
    /// random impairments, small and lying send buffers: whatever happens, once everything is
    /// over (three virtual hours, past every timeout), no flow and no socket is left, and the
    /// engine never misused a socket.
    #[test]
    fn chaos_leaves_nothing_behind(seed in any::<u64>()) {
        let mut r = SimRng::new(seed);
        let impair = Impair {
            loss: r.unit() * 0.05,
            reorder: r.unit() * 0.05,
            duplicate: r.unit() * 0.05,
            truncate: r.unit() * 0.01,
            delay: Duration::from_micros(10 + r.below(1000)),
            jitter: Duration::from_micros(r.below(300)),
            ..Impair::default()
        };
        let sndbuf = 4096 + r.below(100_000) as usize;
        let slack = if r.chance(0.3) { r.below(4000) as usize } else { 0 };
        let servers = 1 + r.below(3);
        let mut s = Scenario::new(seed)
            .impair(impair)
            .forward_tcp("8080")
            .reachable(REMOTE)
            .host(|h| {
                h.sndbuf = sndbuf;
                h.send_space_slack = slack;
            });
        for p in 0..servers {
            s = s.remote_server(&format!("{REMOTE}:{}", 100 + p), random_app(&mut r, 1000 + p));
        }
        let mut w = s.build();
        let mut guest = Vec::new();
        for i in 0..1 + r.below(6) {
            if r.chance(0.3) {
                guest.push(w.guest_listen(8080, random_app(&mut r, 2000 + i)));
                w.remote_connect(
                    addr(&format!("203.0.113.20:{}", 40000 + i)),
                    addr("198.51.100.2:8080"),
                    random_app(&mut r, 3000 + i),
                );
            } else {
                // One port past the servers: refused.
                let port = 100 + r.below(servers + 1);
                guest.push(w.guest_connect(
                    addr(&format!("{REMOTE}:{port}")),
                    random_app(&mut r, 4000 + i),
                ));
            }
        }
        w.run_for(Duration::from_millis(r.below(2000)));
        if r.chance(0.5) {
            let victim = guest[r.below(guest.len() as u64) as usize];
            w.guest.tcp_abort(victim);
        }
        w.run_for(Duration::from_secs(3 * 3600));
        prop_assert_eq!(w.counters().tcp.flows, 0, "{}", w.diagnose());
        prop_assert_eq!(w.host.open_sockets(), 0, "{}", w.diagnose());
        prop_assert!(w.host.violations.is_empty(), "{}", w.diagnose());
    }
}
