//! Held ACKs: a little guest data waits up to `ACK_HOLD` for the host's answer to carry its
//! ACK; everything else is acknowledged at once.

mod common;
mod tcp_mock;

use std::time::Duration;

use sans_io::flow::tcp::{ACK_HOLD, HOLD_MAX_BYTES};
use sans_io::flow::SockEvent;
use sans_io::wire::tcp::flags;
use tcp_mock::*;

#[test]
fn an_answer_carries_the_acks_of_the_requests_before_it() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    // Two small requests, pipelined: neither acknowledged alone.
    g.data(&mut h, b"GET /a\r\n");
    h.advance(ACK_HOLD / 2);
    g.data(&mut h, b"GET /b\r\n");
    assert!(h.take().is_empty());
    assert_eq!(h.io.sock(s).written, b"GET /a\r\nGET /b\r\n");
    // The answer comes before the first one's time is up: its frame acknowledges both.
    h.advance(ACK_HOLD / 2 - Duration::from_micros(1));
    assert!(h.take().is_empty());
    h.io.sock(s).rx.extend_from_slice(b"200 a");
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].ack, &segs[0].payload[..]), (g.seq, &b"200 a"[..]));
    assert_eq!(h.engine.counters().tcp.acks_carried, 1);
    g.receive(&segs);
    g.ack_all(&mut h);
    // Nothing held is left to go out later.
    h.advance(Duration::from_millis(10));
    assert!(h.take().is_empty());
    assert_eq!(h.engine.counters().tcp.acks_held_out, 0);
    h.check();
}

/// One exchange whose request is acknowledged at once: the ACK, then the answer.
fn exchange_acked_at_once(h: &mut H, g: &mut Guest, s: sans_io::flow::SockRef) {
    g.data(h, b"query");
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].payload.is_empty() && segs[0].ack == g.seq);
    answer(h, g, s, 1);
}

/// The host answers at once: `frames` frames to the guest, which acknowledges them.
fn answer(h: &mut H, g: &mut Guest, s: sans_io::flow::SockRef, frames: usize) {
    h.io.sock(s).rx.extend_from_slice(b"answer");
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), frames, "{segs:?}");
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(g.receive(&segs), b"answer");
    g.ack_all(h);
}

#[test]
fn a_late_answer_lets_the_ack_go_alone_and_costs_the_next_exchange_its_hold() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    for late in 1..=3 {
        g.data(&mut h, b"query");
        h.advance(ACK_HOLD - Duration::from_micros(1));
        assert!(h.take().is_empty(), "held until its time");
        h.advance(Duration::from_micros(1));
        let segs = h.take();
        assert_eq!(segs.len(), 1);
        assert!(segs[0].is(flags::ACK) && segs[0].payload.is_empty());
        assert_eq!(segs[0].ack, g.seq);
        assert_eq!(h.engine.counters().tcp.acks_held_out, late);
        h.advance(Duration::from_millis(3));
        answer(&mut h, &mut g, s, 1);
        // The host was slow (or the machine stalled): the next request is acknowledged at
        // once, and its prompt answer lets the one after be held again.
        exchange_acked_at_once(&mut h, &mut g, s);
        g.data(&mut h, b"query");
        assert!(h.take().is_empty());
        answer(&mut h, &mut g, s, 1);
        assert_eq!(h.engine.counters().tcp.acks_carried, late);
    }
    h.check();
}

#[test]
fn a_slow_host_gets_no_held_acks_after_its_first_answer() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    for _ in 0..20 {
        g.data(&mut h, b"query");
        h.advance(Duration::from_millis(2));
        assert_eq!(h.take().len(), 1);
        answer(&mut h, &mut g, s, 1);
    }
    assert_eq!(h.engine.counters().tcp.acks_held_out, 1);
    h.check();
}

#[test]
fn a_guest_waiting_for_the_ack_of_its_first_write_pays_the_hold_ever_more_rarely() {
    use sans_io::flow::tcp::MAX_WAIT_SHIFT;
    // A guest's Nagle holds its second small write until the first is acknowledged, and
    // the server answers only once it has both: each held ACK is late, and each costs more
    // prompt answers before the next hold, up to a bound.
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    let mut held_out = Vec::new();
    for exchange in 0..200 {
        g.data(&mut h, b"head");
        if h.take().is_empty() {
            h.advance(ACK_HOLD);
            assert_eq!(h.take().len(), 1);
            held_out.push(exchange);
        }
        g.data(&mut h, b"body");
        assert_eq!(h.take().len(), 1, "acknowledged at once");
        answer(&mut h, &mut g, s, 1);
    }
    // Late answers at exchanges 0, 2, 6, 14, 30, 62, 126: 2, 4, 8, 16, 32, 64 prompt
    // answers after each (the late exchange's own answer to its second write among them).
    assert_eq!(held_out, [0, 2, 6, 14, 30, 62, 126]);
    const { assert!(MAX_WAIT_SHIFT >= 7) };
    h.check();
}

#[test]
fn a_full_segment_of_data_is_acknowledged_at_once() {
    let mut h = H::new();
    let (mut g, _s) = connected(&mut h, None);
    g.data(&mut h, &vec![7u8; HOLD_MAX_BYTES as usize]);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq);
    // A little, held; then more that makes a full segment with it: both acknowledged now.
    g.data(&mut h, &[1u8; 1000]);
    assert!(h.take().is_empty());
    g.data(&mut h, &[2u8; 460]);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq);
    // Nothing held behind it.
    h.advance(ACK_HOLD);
    assert!(h.take().is_empty());
    assert_eq!(h.engine.counters().tcp.acks_held_out, 0);
    h.check();
}

#[test]
fn a_fin_is_acknowledged_at_once() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    g.send(&mut h, flags::ACK | flags::PSH | flags::FIN, b"bye");
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq, "data and FIN");
    assert!(h.io.sock(s).shut);
    h.check();
}

#[test]
fn a_window_half_used_is_measured_and_acknowledged_at_once() {
    let mut h = H::new();
    // A small send buffer: the handshake offered 2,000 bytes.
    h.io.default_space = 2000;
    let (mut g, s) = connected(&mut h, None);
    // 600 bytes leave more than half of it: held.
    g.data(&mut h, &[1u8; 600]);
    assert!(h.take().is_empty());
    // 600 more leave less than half: the guest would soon wait for a window update, so the
    // ACK goes now, with the room measured (the socket took 1,200 of its 2,000).
    g.data(&mut h, &[2u8; 600]);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(u32::from(segs[0].window), 800);
    assert_eq!(h.io.sock(s).written.len(), 1200);
    h.check();
}
