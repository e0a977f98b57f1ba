//! Link impairments under the configuration services: the guest still configures itself over a
//! lossy, reordering, duplicating link, and truncated frames crash nothing.

use std::time::Duration;

use sim::{Impair, Scenario};

#[test]
fn dhcp_over_a_lossy_link() {
    for seed in 1..=4 {
        let mut w = Scenario::new(seed)
            .dhcp()
            .impair(Impair {
                jitter: Duration::from_micros(200),
                ..Impair::lossy(0.2)
            })
            .build();
        let leased = w.run_until(Duration::from_secs(120), |w| w.guest.lease.is_some());
        assert!(
            leased,
            "seed {seed}: {:?} {:?}",
            w.to_engine.stats,
            w.counters()
        );
        assert!(w.to_engine.stats.lost + w.to_guest.stats.lost > 0 || seed > 1);
    }
}

#[test]
fn truncated_frames_are_counted_not_fatal() {
    let mut w = Scenario::new(5)
        .dhcp()
        .impair(Impair {
            truncate: 0.5,
            ..Impair::default()
        })
        .build();
    w.run_until(Duration::from_secs(300), |_| false);
    assert!(w.to_engine.stats.truncated > 0 && w.to_guest.stats.truncated > 0);
    assert!(w.counters().malformed > 0, "{:?}", w.counters());
}

#[test]
fn same_seed_same_impairments() {
    let run = || {
        let mut w = Scenario::new(9).dhcp().impair(Impair::lossy(0.3)).build();
        w.run_until(Duration::from_secs(60), |_| false);
        (w.transcript, w.to_engine.stats.clone())
    };
    assert_eq!(run(), run());
}
