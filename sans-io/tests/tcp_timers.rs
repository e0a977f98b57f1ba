//! Timeouts: inactivity, vanished guests, handshakes, FINs; and the engine's deadline.

mod common;
mod tcp_mock;

use std::time::Duration;

use sans_io::flow::tcp::{ACK_HOLD, ACT_TIMEOUT, FIN_TIMEOUT};
use sans_io::flow::SockEvent;
use sans_io::wire::tcp::flags;
use tcp_mock::*;

#[test]
fn inactivity_resets_both_sides() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.advance(ACT_TIMEOUT - Duration::from_secs(60));
    g.data(&mut h, b"still here");
    h.advance(ACK_HOLD);
    assert_eq!(h.take().len(), 1);
    h.advance(ACT_TIMEOUT - Duration::from_secs(1));
    assert!(h.take().is_empty(), "activity pushed the timeout back");
    assert!(h.io.sock(s).closed.is_none());
    h.advance(Duration::from_secs(2));
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].has(flags::RST));
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.tcp().len(), 0);
    assert_eq!(h.engine.counters().tcp.timeouts, 1);
    h.check();
}

#[test]
fn vanished_guest_is_given_up_after_the_retries() {
    let mut h = H::new();
    let (_g, s) = connected(&mut h, None);
    h.io.sock(s).rx.extend_from_slice(&[1u8; 100]);
    h.event(s, SockEvent::Readable);
    assert_eq!(h.take().len(), 1);
    let mut resent = 0;
    for _ in 0..400 {
        h.advance(Duration::from_secs(1));
        for seg in h.take() {
            if seg.has(flags::RST) {
                assert_eq!(h.io.sock(s).closed, Some(true));
                assert_eq!(resent, 8);
                assert_eq!(h.engine.tcp().len(), 0);
                h.check();
                return;
            }
            assert_eq!(seg.payload.len(), 100);
            resent += 1;
        }
    }
    panic!("never gave up");
}

#[test]
fn unanswered_syn_ack_is_retried_then_both_reset() {
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.syn(&mut h, 1460, None);
    let s = h.last_sock();
    h.event(s, SockEvent::Connected);
    assert_eq!(h.take().len(), 1);
    let mut synacks = 0;
    for _ in 0..60 {
        h.advance(Duration::from_secs(1));
        for seg in h.take() {
            if seg.has(flags::RST) {
                assert_eq!(synacks, 4);
                assert_eq!(h.io.sock(s).closed, Some(true));
                assert_eq!(h.engine.tcp().len(), 0);
                return;
            }
            assert!(seg.is(flags::SYN | flags::ACK));
            synacks += 1;
        }
    }
    panic!("never gave up");
}

#[test]
fn connect_that_never_completes_times_out() {
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.syn(&mut h, 1460, None);
    let s = h.last_sock();
    h.advance(Duration::from_secs(129));
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(2));
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].is(flags::RST | flags::ACK));
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(h.io.sock(s).closed, Some(true));
}

#[test]
fn fins_both_ways_without_the_last_ack_time_out() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    g.send(&mut h, flags::FIN | flags::ACK, &[]);
    h.flush();
    h.take();
    h.io.sock(s).eof = true;
    h.event(s, SockEvent::PeerClosed);
    assert!(h.take()[0].has(flags::FIN));
    // The guest never acknowledges our FIN (it keeps being resent meanwhile).
    h.advance(FIN_TIMEOUT - Duration::from_secs(1));
    assert!(h.take().iter().all(|s| s.has(flags::FIN)));
    assert!(h.io.sock(s).closed.is_none());
    h.advance(Duration::from_secs(2));
    assert!(h.take().iter().any(|s| s.has(flags::RST)));
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.tcp().len(), 0);
    h.check();
}

#[test]
fn poll_timeout_is_the_earliest_flow_deadline() {
    let mut h = H::new();
    let (_g, s) = connected(&mut h, None);
    let idle = h.engine.poll_timeout().unwrap();
    assert!(idle <= h.now + ACT_TIMEOUT);
    h.io.sock(s).rx.extend_from_slice(b"x");
    h.event(s, SockEvent::Readable);
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(1))
    );
    assert_eq!(h.take().len(), 1);
    // Work marked during a batch makes the deadline "now" until the batch ends...
    let mut g = _g;
    let frame = h.tcp_frame(g.me, g.peer, g.header(flags::ACK), b"unflushed");
    g.seq = g.seq.wrapping_add(9);
    let mut batch = h.engine.batch(h.now, &mut h.io, &mut h.out);
    batch.frame(&frame);
    assert_eq!(batch.engine().poll_timeout(), Some(h.now));
    batch.finish();
    // ... when its ACK, for a little data, waits for an answer (see `held_ack`) ...
    assert_eq!(h.engine.poll_timeout(), Some(h.now + ACK_HOLD));
    assert!(h.take().is_empty());
    // ... and a batch dropped without `finish` flushes all the same.
    let frame = h.tcp_frame(g.me, g.peer, g.header(flags::ACK), b"again");
    h.engine.batch(h.now, &mut h.io, &mut h.out).frame(&frame);
    assert_eq!(h.engine.poll_timeout(), Some(h.now + ACK_HOLD));
    assert_eq!(h.io.sock(s).written, b"unflushedagain");
    // No answer: the held ACK goes at its time, for both.
    h.advance(ACK_HOLD);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq.wrapping_add(5));
}

#[test]
fn short_connections_end_with_a_wake_up_a_tick_not_one_each() {
    // Twenty connections, a millisecond apart: the host answers and closes, the guest reads,
    // then closes too; each flow lingers in TIME_WAIT. Their answers' retransmission timers
    // stopped when acknowledged, and their TIME_WAIT ends fall within a tick or two.
    let mut h = H::new();
    for i in 0..20u16 {
        let mut g = Guest::new(&format!("192.0.2.2:{}", 40000 + i), "203.0.113.5:80");
        g.syn(&mut h, 1460, None);
        let s = h.last_sock();
        h.event(s, SockEvent::Connected);
        g.receive(&h.take());
        g.ack_all(&mut h);
        h.io.sock(s).rx.extend_from_slice(b"r");
        h.io.sock(s).eof = true;
        h.event(s, SockEvent::Readable);
        h.event(s, SockEvent::PeerClosed);
        assert_eq!(g.receive(&h.take()), b"r");
        g.ack_all(&mut h);
        g.send(&mut h, flags::FIN | flags::ACK, &[]);
        h.flush();
        assert_eq!(h.io.sock(s).closed, Some(false), "closed gracefully");
        h.advance(Duration::from_millis(1));
    }
    assert_eq!(h.engine.tcp().len(), 20);
    let before = h.wakeups;
    h.advance(Duration::from_secs(3));
    assert_eq!(h.engine.tcp().len(), 0, "TIME_WAIT over");
    let wakeups = h.wakeups - before;
    // At most the two ticks the ends fall in (it was one for each flow's stale retransmission
    // entry and one for each end: forty).
    assert!(wakeups <= 2, "{wakeups} wake-ups");
    h.check();
}

#[test]
fn exchanges_move_the_engines_deadline_once_a_grain_not_once_each() {
    // Each request's ACK is held for the answer, which carries it; each answer starts the
    // retransmission timer and the guest's ACK stops it. The driver re-arms its timer when the
    // engine's deadline changes, a cost at every change: fifty exchanges 100 µs apart must
    // move it about once a hold grain (5 ms: 5 or 6 times), not at each exchange.
    use sans_io::flow::tcp::HOLD_GRAIN;
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    let mut deadlines = Vec::new();
    for i in 0..50u8 {
        g.data(&mut h, &[i]);
        assert_eq!(h.io.sock(s).written.last(), Some(&i));
        deadlines.push(h.engine.poll_timeout());
        h.io.sock(s).rx.extend_from_slice(&[i]);
        h.event(s, SockEvent::Readable);
        let segs = h.take();
        assert_eq!(segs.len(), 1, "the answer alone, carrying the ACK");
        assert_eq!(segs[0].ack, g.seq);
        assert_eq!(g.receive(&segs), [i]);
        deadlines.push(h.engine.poll_timeout());
        g.ack_all(&mut h);
        assert!(h.take().is_empty());
        deadlines.push(h.engine.poll_timeout());
        h.advance(Duration::from_micros(100));
        assert!(h.take().is_empty(), "no ACK left to go alone");
    }
    deadlines.dedup();
    let grains = (50 * 100 / HOLD_GRAIN.as_micros()) as usize;
    assert!(deadlines.len() <= grains + 2, "{deadlines:?}");
    assert_eq!(h.engine.counters().tcp.acks_carried, 50);
    assert_eq!(h.engine.counters().tcp.acks_held_out, 0);
    h.check();
}
