//! Frames whose TCP and UDP checksums the link finishes (vhost-user with GUEST_CSUM; pasta's
//! tap, for UDP) reach the guest exactly as frames checksummed in full do: the same world run
//! each way gives the same frames, byte for byte, for a download, an upload and UDP both ways.

use std::net::SocketAddr;
use std::time::Duration;

use sans_io::wire::offload::L4Checksum;
use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::world::{Direction, World};
use sim::{App, Pattern, Scenario};

fn run(seed: u64, mode: L4Checksum) -> World {
    let mut w = Scenario::new(seed)
        .remote_server(
            &format!("{REMOTE}:19"),
            App::source_pattern(Pattern(5), 300_000),
        )
        .remote_server(&format!("{REMOTE}:9"), App::sink())
        .build();
    let echo = addr(&format!("{REMOTE}:7"));
    w.host.udp_echo(echo);
    w.leave_checksums(mode);
    let down = w.guest_connect(addr(&format!("{REMOTE}:19")), App::sink());
    w.guest_connect(
        addr(&format!("{REMOTE}:9")),
        App::source_pattern(Pattern(6), 200_000),
    );
    let guest: SocketAddr = SocketAddr::new(HOST_ADDR.parse().unwrap(), 40000);
    w.guest_udp(guest, echo, b"ping over udp");
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    assert_eq!(w.udp_at_guest().len(), 1, "the echo came back");
    Pattern(5)
        .check(w.guest_conn(down).received(), 300_000)
        .unwrap();
    w.assert_no_violations();
    w
}

#[test]
fn finished_partial_checksums_give_the_frames_of_full_ones() {
    for (seed, mode) in [1, 2, 3]
        .into_iter()
        .flat_map(|seed| [L4Checksum::Partial, L4Checksum::PartialUdp].map(|mode| (seed, mode)))
    {
        let (full, partial) = (run(seed, L4Checksum::Full), run(seed, mode));
        let to_guest = |w: &World| -> Vec<Vec<u8>> {
            w.transcript
                .iter()
                .filter(|(_, d, _)| *d == Direction::EngineToGuest)
                .map(|(_, _, f)| f.clone())
                .collect()
        };
        let (a, b) = (to_guest(&full), to_guest(&partial));
        assert!(a.len() > 200, "seed {seed}: only {} frames", a.len());
        assert!(a == b, "seed {seed}, {mode:?}: the frames differ");
        assert_eq!(full.counters(), partial.counters());
    }
}
