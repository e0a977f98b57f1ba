//! Same seed, same world: byte-identical transcripts with TCP traffic on an impaired link.

use std::time::Duration;

use sim::scenario::{addr, REMOTE};
use sim::{App, Impair, Pattern, Scenario};

fn run(seed: u64) -> sim::world::Transcript {
    let server = format!("{REMOTE}:7");
    let mut w = Scenario::new(seed)
        .impair(Impair {
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(100),
            ..Impair::lossy(0.03)
        })
        .remote_server(&server, App::echo())
        .build();
    for i in 0..4 {
        w.guest_connect(addr(&server), App::source_pattern(Pattern(i), 100_000));
    }
    assert!(
        w.run_until_all_done(Duration::from_secs(1800)),
        "{}",
        w.diagnose()
    );
    w.transcript
}

#[test]
fn same_seed_same_tcp_transcript() {
    let a = run(51);
    assert!(a.len() > 100);
    assert!(a == run(51), "transcripts differ");
    assert!(a != run(52), "the seed changes nothing");
}
