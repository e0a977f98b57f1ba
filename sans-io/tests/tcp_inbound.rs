//! Host connections to forwarded ports become guest connections.

mod common;
mod tcp_mock;

use std::time::Duration;

use sans_io::engine::EngineOptions;
use sans_io::flow::SockEvent;
use sans_io::fwd::ForwardMode;
use sans_io::wire::tcp::flags;
use tcp_mock::*;

fn forwarding(spec: &str) -> H {
    let cfg = config(|o| o.tcp_in.add(spec.parse().unwrap()).unwrap());
    H::with(cfg, EngineOptions::default())
}

/// Accepts a connection from `peer` on local port 8080 (forwarded to the guest's 80) and
/// checks the SYN to the guest; returns the guest end (not yet answered) and the socket.
fn accept(h: &mut H, peer: &str) -> (Guest, sans_io::flow::SockRef) {
    let s = h.io.accepted();
    h.accept(s, peer, "192.0.2.2:8080");
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let syn = &segs[0];
    assert!(syn.is(flags::SYN));
    assert_eq!(syn.dst, "192.0.2.2:80".parse().unwrap());
    assert_eq!(syn.mss, Some(65480));
    assert_eq!(syn.wscale, Some(8));
    assert_eq!(
        h.io.sock(s).interest,
        (false, false),
        "not reading before the handshake"
    );
    let mut g = Guest::new("192.0.2.2:80", &syn.src.to_string());
    g.receive(&segs);
    (g, s)
}

#[test]
fn accepted_connection_handshake_then_data() {
    let mut h = forwarding("8080:80");
    let (mut g, s) = accept(&mut h, "198.51.100.7:50000");
    assert_eq!(g.peer, "198.51.100.7:50000".parse().unwrap());
    assert_eq!(h.engine.counters().tcp.accepted, 1);

    // The host client talks first; nothing moves before the guest answers.
    h.io.sock(s).rx.extend_from_slice(b"hello guest");
    h.event(s, SockEvent::Readable);
    assert!(h.take().is_empty());

    let hdr = sans_io::wire::tcp::Header {
        mss: Some(1460),
        wscale: Some(7),
        ..g.header(flags::SYN | flags::ACK)
    };
    h.send_raw(g.me, g.peer, hdr, &[]);
    g.seq = g.seq.wrapping_add(1);
    h.flush();
    let segs = h.take();
    // Our ACK carries the waiting data.
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(g.receive(&segs), b"hello guest");
    g.data(&mut h, b"hello host");
    assert_eq!(h.io.sock(s).written, b"hello host");
    assert_eq!(h.io.sock(s).discarded, 11);
    h.check();
}

#[test]
fn loopback_peers_appear_from_the_gateway() {
    // Through the tap, that is: pasta's loopback bypass off.
    let cfg = config(|o| {
        o.tcp_in.add("8080:80".parse().unwrap()).unwrap();
        o.no_splice = true;
    });
    let mut h = H::with(cfg, EngineOptions::default());
    let (g, _) = accept(&mut h, "127.0.0.1:50000");
    assert_eq!(g.peer, "192.0.2.1:50000".parse().unwrap());
}

#[test]
fn loopback_peers_are_handed_to_the_bypass_by_default() {
    let mut h = forwarding("8080:80");
    let s = h.io.accepted();
    h.accept(s, "127.0.0.1:50000", "127.0.0.1:8080");
    assert!(h.take().is_empty(), "nothing to the guest");
    assert_eq!(
        h.io.sock(s).closed,
        Some(true),
        "the mock has no bypass: reset"
    );
    assert_eq!(h.engine.counters().tcp.handed_over, 1);
    assert_eq!(h.engine.tcp().len(), 0);
}

#[test]
fn syn_is_retried_then_given_up() {
    let mut h = forwarding("8080:80");
    let (_g, s) = accept(&mut h, "198.51.100.7:50000");
    let mut times = Vec::new();
    let start = h.now;
    for _ in 0..80 {
        h.advance(Duration::from_millis(500));
        for seg in h.take() {
            assert!(seg.is(flags::SYN));
            times.push((h.now - start).as_millis() / 500 * 500);
        }
    }
    // 1, 2, 4, 8 s apart, then 16 s more for an answer.
    assert_eq!(times, [1000, 3000, 7000, 15000]);
    assert_eq!(h.io.sock(s).closed, Some(true), "given up: reset");
    assert_eq!(h.engine.tcp().len(), 0);
    assert_eq!(h.engine.counters().tcp.timeouts, 1);
    h.check();
}

#[test]
fn guest_refuses_with_a_reset() {
    let mut h = forwarding("8080:80");
    let (mut g, s) = accept(&mut h, "198.51.100.7:50000");
    g.send(&mut h, flags::RST | flags::ACK, &[]);
    h.flush();
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.tcp().len(), 0);
}

#[test]
fn unforwarded_ports_are_reset() {
    let mut h = forwarding("8080:80");
    let s = h.io.accepted();
    h.accept(s, "198.51.100.7:50000", "192.0.2.2:9999");
    assert!(h.take().is_empty());
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.counters().tcp.unforwarded, 1);

    // `all` leaves the ephemeral range alone.
    let mut cfg = config(|_| {});
    cfg.forwarding.tcp_in = ForwardMode::All;
    let mut h = H::with(
        cfg,
        EngineOptions {
            ephemeral: 40000..=50000,
            ..EngineOptions::default()
        },
    );
    let s = h.io.accepted();
    h.accept(s, "198.51.100.7:50000", "192.0.2.2:45000");
    assert_eq!(h.io.sock(s).closed, Some(true));
    let s = h.io.accepted();
    h.accept(s, "198.51.100.7:50000", "192.0.2.2:22");
    assert!(h.io.sock(s).closed.is_none());
    assert_eq!(h.take()[0].dst.port(), 22);
}

#[test]
fn host_closes_before_the_guest_answers() {
    let mut h = forwarding("8080:80");
    let (mut g, s) = accept(&mut h, "198.51.100.7:50000");
    h.io.sock(s).rx.extend_from_slice(b"x");
    h.io.sock(s).eof = true;
    h.event(s, SockEvent::PeerClosed);
    assert!(h.take().is_empty());
    g.send(&mut h, flags::SYN | flags::ACK, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert_eq!(g.receive(&segs), b"x");
    assert!(segs[1].has(flags::FIN));
}
