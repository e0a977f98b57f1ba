//! Request/response exchanges through the engine with smoltcp as the guest: a prompt answer
//! carries the ACK of its request (one frame to the guest an exchange, not two), a slow one
//! lets it go alone once, and both deliver every byte.

use std::time::Duration;

use sim::capture::tcp_segments;
use sim::scenario::{addr, REMOTE};
use sim::world::{Direction, World};
use sim::{App, Pattern, Scenario};

const REQUESTS: u64 = 200;
const SIZE: u64 = 100;

/// `REQUESTS` requests of `SIZE` bytes to an echo server whose answers take `rtt` to come
/// back to the host, each sent once the one before was answered, all checked.
fn exchanges(seed: u64, rtt: Duration) -> World {
    let server = format!("{REMOTE}:7");
    let mut w = Scenario::new(seed)
        .host(|h| h.latency = rtt / 2)
        .remote_server(&server, App::echo())
        .build();
    let c = w.guest_connect(addr(&server), App::requests(Pattern(5), REQUESTS, SIZE));
    assert!(
        w.run_until_all_done(Duration::from_secs(120)),
        "{}",
        w.diagnose()
    );
    Pattern(5)
        .check(w.guest_conn(c).received(), REQUESTS * SIZE)
        .unwrap();
    w.assert_no_violations();
    w
}

/// Frames to the guest with a payload, and bare ACKs (no payload, no SYN or FIN).
fn frames_to_guest(w: &World) -> (usize, usize) {
    use sim::capture::flags::{FIN, SYN};
    let segs: Vec<_> = tcp_segments(&w.transcript)
        .into_iter()
        .filter(|s| s.dir == Direction::EngineToGuest)
        .collect();
    let data = segs.iter().filter(|s| s.payload_len > 0).count();
    let bare = segs
        .iter()
        .filter(|s| s.payload_len == 0 && s.flags & (SYN | FIN) == 0)
        .count();
    (data, bare)
}

#[test]
fn a_prompt_answer_carries_the_ack_of_its_request() {
    let w = exchanges(31, Duration::from_micros(200));
    let tcp = &w.counters().tcp;
    assert_eq!(tcp.acks_held_out, 0);
    assert!(tcp.acks_carried >= REQUESTS - 1, "{tcp:?}");
    let (data, bare_acks) = frames_to_guest(&w);
    assert!(data as u64 >= REQUESTS);
    // A few for the handshake's and the close's exchanges, none an exchange.
    assert!(bare_acks <= 3, "{bare_acks} bare ACKs for {data} answers");
}

#[test]
fn a_slow_answer_leaves_the_ack_to_go_alone_once() {
    let w = exchanges(32, Duration::from_millis(3));
    let tcp = &w.counters().tcp;
    assert_eq!(tcp.acks_held_out, 1, "{tcp:?}");
    assert_eq!(tcp.acks_carried, 0);
    // Every other request acknowledged at once: an ACK an exchange.
    let (data, bare_acks) = frames_to_guest(&w);
    assert!(data as u64 >= REQUESTS);
    assert!(
        bare_acks as u64 >= REQUESTS,
        "{bare_acks} bare ACKs for {data} answers"
    );
}
