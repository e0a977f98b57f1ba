//! The data path: partial writes and the stash, windows, out-of-order segments,
//! retransmission.

mod common;
mod tcp_mock;

use std::time::Duration;

use proptest::prelude::*;
use sans_io::flow::tcp::ACK_HOLD;
use sans_io::flow::SockEvent;
use sans_io::wire::tcp::flags;
use tcp_mock::*;

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[test]
fn partial_write_goes_to_the_stash_and_out_when_writable() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).space = 1000;
    let seg = pattern(1460, 1);
    g.data(&mut h, &seg);
    assert_eq!(h.io.sock(s).written, &seg[..1000]);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq, "the whole segment is acknowledged");
    assert_eq!(segs[0].window, 0, "no room: the window is closed");
    assert!(h.io.sock(s).interest.1, "waiting for room");
    assert_eq!(h.engine.counters().tcp.stash_uses, 1);

    // Room again: the stash goes first, then the guest hears of the window.
    h.io.sock(s).space = 10_000;
    h.event(s, SockEvent::Writable);
    assert_eq!(h.io.sock(s).written, seg);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(u32::from(segs[0].window), 10_000 - 460);
    assert!(
        !h.io.sock(s).interest.1,
        "the window holds a segment: no more updates"
    );

    // And the next segment goes straight through.
    g.data(&mut h, b"more");
    assert_eq!(&h.io.sock(s).written[1460..], b"more");
    h.check();
}

#[test]
fn writable_interest_stays_on_until_the_window_opens() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    // The guest's data takes exactly the room there is: the window closes. (A little data:
    // its ACK waits for an answer that doesn't come, see `held_ack`.)
    h.io.sock(s).space = 1000;
    g.data(&mut h, &pattern(1000, 12));
    h.advance(ACK_HOLD);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].ack, segs[0].window), (g.seq, 0));
    assert!(h.io.sock(s).interest.1, "waiting for room");
    // The kernel says writable, but there is still no room: keep waiting, say nothing.
    h.event(s, SockEvent::Writable);
    assert!(h.take().is_empty());
    assert!(h.io.sock(s).interest.1, "still waiting for room");
    // Room: the window update goes out at once, not at the guest's next probe.
    h.io.sock(s).space = 10_000;
    h.event(s, SockEvent::Writable);
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].is(flags::ACK));
    assert_eq!((segs[0].ack, segs[0].window), (g.seq, 10_000));
    assert!(!h.io.sock(s).interest.1, "the window holds a segment");
    h.check();
}

#[test]
fn writable_reports_that_bring_no_room_again_and_again_turn_to_polling() {
    use sans_io::flow::tcp::WUPDATE_POLL;
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).space = 500;
    g.data(&mut h, &pattern(500, 13));
    h.advance(ACK_HOLD);
    assert_eq!(h.take().len(), 1);
    // A level-triggered report repeats at once while the kernel's idea of room isn't ours:
    // after two in a row for nothing, the room is polled instead.
    h.event(s, SockEvent::Writable);
    assert!(h.io.sock(s).interest.1);
    h.event(s, SockEvent::Writable);
    assert!(!h.io.sock(s).interest.1, "no spinning on Writable");
    assert!(h.take().is_empty());
    // Still nothing at the next poll: measured again twice as late (the peer isn't reading;
    // a stalled flow must not cost a busy loop), still without listening.
    h.advance(WUPDATE_POLL);
    assert!(h.take().is_empty());
    assert!(!h.io.sock(s).interest.1);
    // Room appears: not measured before the backed-off poll, found by it.
    h.io.sock(s).space = 5000;
    h.advance(WUPDATE_POLL);
    assert!(h.take().is_empty());
    h.advance(WUPDATE_POLL);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].ack, segs[0].window), (g.seq, 5000));
    assert!(!h.io.sock(s).interest.1);
    h.advance(Duration::from_secs(1));
    assert!(h.take().is_empty());
    h.check();
}

#[test]
fn guest_data_while_the_stash_is_stuck_is_dropped_then_resent_promptly() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).space = 100;
    let a = pattern(1000, 2);
    let b = pattern(500, 3);
    g.send(&mut h, flags::ACK, &a);
    let b_seq = g.seq;
    g.send(&mut h, flags::ACK, &b);
    h.flush();
    assert_eq!(h.io.sock(s).written, &a[..100]);
    assert_eq!(h.engine.counters().tcp.no_room_drops, 1);
    let segs = h.take();
    assert_eq!(segs.last().unwrap().ack, b_seq, "a acknowledged, b not");

    h.io.sock(s).space = 100_000;
    h.event(s, SockEvent::Writable);
    assert_eq!(h.io.sock(s).written, a);
    // A window update and three duplicate ACKs: the guest resends b at once.
    let segs = h.take();
    assert_eq!(segs.len(), 4);
    assert!(segs
        .iter()
        .all(|s| s.ack == b_seq && s.window == segs[0].window));
    g.seq = b_seq;
    g.data(&mut h, &b);
    assert_eq!(&h.io.sock(s).written[1000..], &b[..]);
    h.check();
}

#[test]
fn out_of_order_segments_get_a_duplicate_ack_and_are_not_written() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    let expected = g.seq;
    g.seq = g.seq.wrapping_add(1460);
    for _ in 0..3 {
        g.send(&mut h, flags::ACK, b"later");
    }
    h.flush();
    assert!(h.io.sock(s).written.is_empty());
    let segs = h.take();
    assert_eq!(segs.len(), 3, "one duplicate ACK each");
    assert!(segs
        .iter()
        .all(|x| x.ack == expected && x.window == segs[0].window));
    assert_eq!(h.engine.counters().tcp.out_of_order, 3);

    // Overlapping old data is trimmed to its new part.
    g.seq = expected;
    g.data(&mut h, b"hello");
    g.seq = expected.wrapping_add(3);
    g.data(&mut h, b"lo, world");
    assert_eq!(h.io.sock(s).written, b"hello, world");
    h.check();
}

/// Segment `i` of 1000 bytes of `data`, from `base`: sent and flushed, the engine's answer.
fn send_nth(h: &mut H, g: &mut Guest, base: u32, data: &[u8], i: usize) -> Vec<Seg> {
    g.seq = base.wrapping_add((i * 1000) as u32);
    g.send(h, flags::ACK, &data[i * 1000..(i + 1) * 1000]);
    h.flush();
    h.take()
}

/// Where a segment from the engine says the window ends.
fn edge(s: &Seg) -> u32 {
    s.ack.wrapping_add(u32::from(s.window))
}

#[test]
fn filling_a_hole_with_more_lost_beyond_prompts_the_next_fast_retransmit() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    let data = pattern(4 * 1000, 10);
    let base = g.seq;
    let at = |i: usize| base.wrapping_add((i * 1000) as u32);
    // Segment 0 is lost; 1 to 3 arrive and are dropped, each with a duplicate ACK.
    let mut held = 0;
    for i in 1..4 {
        let segs = send_nth(&mut h, &mut g, base, &data, i);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].ack, at(0));
        held = edge(&segs[0]);
    }
    // The guest's fast retransmit of 0 fills the first hole: its ACK comes with three
    // duplicates, so the guest resends 1 at once.
    let segs = send_nth(&mut h, &mut g, base, &data, 0);
    assert_eq!(segs.len(), 4, "{segs:?}");
    assert!(segs
        .iter()
        .all(|x| x.is(flags::ACK) && x.ack == at(1) && x.window == segs[0].window));
    assert_eq!(h.engine.counters().tcp.hole_prompts, 1);
    // Until the holes are filled, the window doesn't move on: new data would be dropped.
    assert_eq!(edge(&segs[0]), held);
    let segs = send_nth(&mut h, &mut g, base, &data, 1);
    assert_eq!(segs.len(), 4);
    assert!(segs.iter().all(|x| x.ack == at(2) && edge(x) == held));
    let segs = send_nth(&mut h, &mut g, base, &data, 2);
    assert_eq!(segs.len(), 4);
    // The last of what was dropped: nothing missing beyond. The window reopens, and the
    // ACK saying so goes out twice.
    let segs = send_nth(&mut h, &mut g, base, &data, 3);
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert!(segs.iter().all(|x| x.ack == at(4)));
    assert_ne!(edge(&segs[0]), held);
    assert_eq!(h.engine.counters().tcp.hole_prompts, 3);
    assert_eq!(h.io.sock(s).written, data);
    // And from then on, in-order data is acknowledged once (a little of it after waiting
    // for an answer), and nothing is repeated.
    g.seq = at(4);
    g.data(&mut h, b"more");
    h.advance(ACK_HOLD);
    assert_eq!(h.take().len(), 1);
    h.advance(Duration::from_millis(500));
    assert!(h.take().is_empty());
    assert_eq!(h.engine.counters().tcp.hole_prompts, 3);
    assert_eq!(h.engine.counters().tcp.prompt_repeats, 0);
    h.check();
}

#[test]
fn an_unanswered_prompt_is_repeated_as_a_window_update() {
    use sans_io::flow::tcp::{PROMPT_RETRIES, PROMPT_WAIT_MIN};
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, Some(7));
    let data = pattern(4 * 1000, 11);
    let base = g.seq;
    let at = |i: usize| base.wrapping_add((i * 1000) as u32);
    // Segment 0 lost, and only one segment after it: too few duplicates for the guest.
    let first = send_nth(&mut h, &mut g, base, &data, 1);
    assert_eq!(first.len(), 1);
    h.advance(PROMPT_WAIT_MIN - Duration::from_micros(1));
    assert!(h.take().is_empty());
    h.advance(Duration::from_micros(1));
    let segs = h.take();
    assert_eq!(segs.len(), 4, "{segs:?}");
    assert!(segs
        .iter()
        .all(|x| x.ack == at(0) && x.window == segs[0].window));
    assert_ne!(segs[0].window, first[0].window, "a window update first");
    assert_eq!(h.engine.counters().tcp.prompt_repeats, 1);
    // Lost again: repeated after twice the wait, a few times, then left to the guest.
    let mut waits = vec![];
    let mut waited = Duration::ZERO;
    for _ in 0..200 {
        h.advance(Duration::from_millis(1));
        waited += Duration::from_millis(1);
        let segs = h.take();
        if !segs.is_empty() {
            assert_eq!(segs.len(), 4);
            waits.push(waited.as_millis());
            waited = Duration::ZERO;
        }
    }
    assert_eq!(waits, [2, 4, 8, 16]);
    assert_eq!(
        h.engine.counters().tcp.prompt_repeats,
        u64::from(PROMPT_RETRIES)
    );
    // The guest resends 0 at last; 1 is still missing: a prompt, answered at once this time.
    let segs = send_nth(&mut h, &mut g, base, &data, 0);
    assert_eq!(segs.len(), 4);
    h.advance(Duration::from_micros(300));
    let segs = send_nth(&mut h, &mut g, base, &data, 1);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].ack, at(2));
    // No repeats of anything answered.
    h.advance(Duration::from_secs(1));
    assert!(h.take().is_empty());
    assert_eq!(&h.io.sock(s).written[..], &data[..2000]);
    h.check();
}

#[test]
fn in_order_data_never_prompts_retransmits() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    for i in 0..50 {
        g.data(&mut h, &pattern(1460, i));
        assert_eq!(h.take().len(), 1);
    }
    // A segment beyond the window we advertised is not a hole the guest will fill.
    let mut far = g;
    far.seq = g.seq.wrapping_add(1 << 20);
    far.data(&mut h, b"bogus");
    assert_eq!(h.take().len(), 1);
    assert_eq!(h.engine.counters().tcp.out_of_order, 1);
    g.data(&mut h, b"y");
    h.advance(ACK_HOLD);
    assert_eq!(h.take().len(), 1);
    h.advance(Duration::from_secs(1));
    assert!(h.take().is_empty());
    assert_eq!(h.engine.counters().tcp.hole_prompts, 0);
    assert_eq!(h.engine.counters().tcp.prompt_repeats, 0);
    assert_eq!(h.io.sock(s).written.len(), 50 * 1460 + 1);
    h.check();
}

#[test]
fn full_guest_window_turns_reading_off_until_it_opens() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    g.window = 0;
    g.ack_all(&mut h);
    h.io.sock(s).rx.extend_from_slice(&pattern(3000, 4));
    h.event(s, SockEvent::Readable);
    assert!(h.take().is_empty());
    assert!(!h.io.sock(s).interest.0, "no reading into a closed window");

    g.window = 2000;
    g.ack_all(&mut h);
    let segs = h.take();
    let total: usize = segs.iter().map(|s| s.payload.len()).sum();
    assert_eq!(total, 2000);
    assert!(!h.io.sock(s).interest.0, "window full again");
    g.receive(&segs);
    g.window = 65535;
    g.ack_all(&mut h);
    let segs = h.take();
    assert_eq!(g.receive(&segs), &pattern(3000, 4)[2000..]);
    g.ack_all(&mut h);
    assert!(h.io.sock(s).interest.0);
    h.check();
}

#[test]
fn zero_window_is_probed() {
    let mut h = H::new();
    let (mut g, _s) = connected(&mut h, None);
    g.window = 0;
    g.ack_all(&mut h);
    h.advance(Duration::from_millis(1100));
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].seq, g.ack.wrapping_sub(1), "a probe below snd_una");
}

#[test]
fn timeout_retransmits_the_same_bytes() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    let data = pattern(3000, 5);
    h.io.sock(s).rx.extend_from_slice(&data);
    h.event(s, SockEvent::Readable);
    let first = h.take();
    assert_eq!(first.len(), 3);
    // Lost. One second later, the same again.
    h.advance(Duration::from_millis(999));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(2));
    let again = h.take();
    assert_eq!(again, first);
    assert_eq!(h.engine.counters().tcp.retransmissions, 1);
    assert_eq!(h.engine.counters().tcp.bytes_to_guest, 3000);
    let peeks: Vec<(usize, usize)> =
        h.io.sock(s)
            .peeks
            .iter()
            .copied()
            .filter(|p| p.1 > 0)
            .collect();
    assert_eq!(
        peeks,
        [
            (0, 1460),
            (1460, 1460),
            (2920, 80),
            (0, 1460),
            (1460, 1460),
            (2920, 80)
        ]
    );
    // The backoff doubles.
    h.advance(Duration::from_millis(1900));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(200));
    assert_eq!(h.take().len(), 3);
    assert_eq!(g.receive(&again), data);
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 3000);
    h.advance(Duration::from_secs(30));
    assert!(h.take().is_empty(), "nothing in flight, nothing resent");
    h.check();
}

#[test]
fn three_duplicate_acks_fast_retransmit() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).rx.extend_from_slice(&pattern(5000, 6));
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), 4);
    // The second segment is lost; the guest acknowledges the first, then three times the same.
    g.receive(&segs[..1]);
    g.ack_all(&mut h);
    assert!(h.take().is_empty());
    for _ in 0..2 {
        g.ack_all(&mut h);
    }
    assert!(h.take().is_empty(), "two duplicates are not enough");
    g.ack_all(&mut h);
    let again = h.take();
    assert_eq!(again.len(), 3);
    assert_eq!(again[0], segs[1]);
    assert_eq!(h.engine.counters().tcp.fast_retransmits, 1);
    assert_eq!(g.receive(&again), &pattern(5000, 6)[1460..]);
    h.check();
}

#[test]
fn window_never_exceeds_the_send_space() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    for space in [70_000u32, 5000, 1, 0, 300, 65535] {
        h.io.sock(s).space = space;
        g.data(&mut h, b"0123456789");
        // No room at all: nothing is acknowledged, nothing said.
        if let Some(ack) = h.take().last() {
            assert!(
                u32::from(ack.window) <= h.io.sock(s).space,
                "{space}: {ack:?}"
            );
        }
    }
}

/// The guest side of the property test: a byte stream sent within the windows the engine
/// advertises, resent from the last acknowledged byte when nothing moves.
struct Sender {
    stream: Vec<u8>,
    base: u32,
    una: usize,
    nxt: usize,
    edge: usize,
}

impl Sender {
    fn absorb(&mut self, segs: &[Seg]) {
        for s in segs {
            let ack = s.ack.wrapping_sub(self.base) as usize;
            if ack > self.stream.len() {
                continue;
            }
            if ack >= self.una {
                self.una = ack;
                self.edge = ack + usize::from(s.window);
            }
            self.nxt = self.nxt.max(self.una);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Space(u32),
    Drain(u32),
    Resend,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..3000).prop_map(Op::Send),
        1 => (0u32..20_000).prop_map(Op::Space),
        2 => (0u32..8000).prop_map(Op::Drain),
        1 => Just(Op::Resend),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    /// Whatever room the socket has from moment to moment, every byte reaches it exactly once
    /// and in order, and no ACK advertises more than the room.
    #[test]
    fn every_byte_once_in_order(ops in proptest::collection::vec(op(), 1..60), len in 1usize..40_000) {
        let mut h = H::new();
        let (g, s) = connected(&mut h, None);
        let mut tx = Sender { stream: pattern(len, 9), base: g.seq, una: 0, nxt: 0, edge: 0 };
        h.io.sock(s).space = 0;
        // The window we gave at the handshake's end.
        tx.edge = 0;
        let send = |h: &mut H, tx: &mut Sender, max: usize| {
            let end = tx.stream.len().min(tx.edge).min(tx.nxt + max.min(1460));
            if end <= tx.nxt {
                // Nothing fits: a window probe (an old-sequence ACK).
                let mut gg = g;
                gg.seq = g.seq.wrapping_add(tx.una as u32).wrapping_sub(1);
                gg.send(h, flags::ACK, &[]);
                return;
            }
            let mut gg = g;
            gg.seq = tx.base.wrapping_add(tx.nxt as u32);
            let payload = tx.stream[tx.nxt..end].to_vec();
            gg.send(h, flags::ACK, &payload);
            tx.nxt = end;
        };
        let (mut prev_ack, mut prev_window) = (0, 0);
        for op in ops {
            match op {
                Op::Send(n) => send(&mut h, &mut tx, n),
                Op::Space(n) => {
                    h.io.sock(s).space = n;
                    h.event_held(s, SockEvent::Writable);
                }
                Op::Drain(n) => {
                    let sp = &mut h.io.sock(s).space;
                    *sp = sp.saturating_add(n);
                }
                Op::Resend => tx.nxt = tx.una,
            }
            h.flush();
            let space = h.io.sock(s).space;
            let segs = h.take();
            // A fresh ACK (new data acknowledged, a window update, a probe answered) advertises
            // at most the room; duplicate ACKs repeat the window they had.
            if let Some(last) = segs.last() {
                if last.ack != prev_ack || last.window != prev_window {
                    prop_assert!(u32::from(last.window) <= space, "window {} > space {}", last.window, space);
                }
                prev_ack = last.ack;
                prev_window = last.window;
            }
            tx.absorb(&segs);
            let written = &h.io.sock(s).written;
            prop_assert!(written.len() <= tx.stream.len());
            prop_assert_eq!(&written[..], &tx.stream[..written.len()]);
        }
        // Then plenty of room, and the guest finishes.
        h.io.sock(s).space = 1 << 24;
        h.event(s, SockEvent::Writable);
        let segs = h.take();
        tx.absorb(&segs);
        for _ in 0..200 {
            if tx.una == tx.stream.len() {
                break;
            }
            tx.nxt = tx.una;
            send(&mut h, &mut tx, 1460);
            h.flush();
            let segs = h.take();
            tx.absorb(&segs);
        }
        prop_assert_eq!(tx.una, tx.stream.len());
        prop_assert_eq!(&h.io.sock(s).written, &tx.stream);
        h.check();
    }
}

#[test]
fn a_live_guest_with_a_closed_window_is_not_given_up() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    g.window = 0;
    g.ack_all(&mut h);
    h.io.sock(s).rx.extend_from_slice(b"waiting");
    h.event(s, SockEvent::Readable);
    let mut probes = 0;
    for _ in 0..30 {
        h.advance(Duration::from_secs(60));
        for seg in h.take() {
            assert!(!seg.has(flags::RST));
            probes += 1;
            // The guest answers each probe: still no room.
            g.ack_all(&mut h);
        }
    }
    assert!(probes >= 20, "{probes}");
    assert!(h.io.sock(s).closed.is_none());
    g.window = 100;
    g.ack_all(&mut h);
    assert_eq!(g.receive(&h.take()), b"waiting");
}

#[test]
fn data_after_a_long_closed_window_gets_a_fresh_retransmission_timer() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    g.window = 0;
    g.ack_all(&mut h);
    h.io.sock(s).rx.extend_from_slice(b"late data");
    h.event(s, SockEvent::Readable);
    // Minutes of probing: the probe timer backs off to a minute.
    for _ in 0..6 {
        h.advance(Duration::from_secs(60));
        h.take();
        g.ack_all(&mut h);
    }
    g.window = 1000;
    g.ack_all(&mut h);
    assert_eq!(g.receive(&h.take()), b"late data");
    // Lost: resent a second later, not a minute.
    h.advance(Duration::from_millis(1001));
    assert_eq!(h.take().len(), 1);
}

#[test]
fn a_huge_window_is_filled_in_bounded_rounds() {
    use sans_io::flow::tcp::OUT_BUDGET;
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, Some(14));
    g.window = u16::MAX; // about 1 GiB
    g.ack_all(&mut h);
    let data = pattern(20 << 20, 7);
    h.io.sock(s).rx.extend_from_slice(&data);
    h.event(s, SockEvent::Readable);
    let mut got = Vec::new();
    let mut rounds = 0;
    while got.len() < data.len() {
        rounds += 1;
        assert!(rounds < 10);
        assert!(h.out.bytes() <= OUT_BUDGET + 65536 + 100);
        let segs: Vec<Seg> = h.out.iter().map(parse_seg).collect();
        h.out.clear();
        got.extend(g.receive(&segs));
        // The driver drained the queue; the engine wants to go on at once.
        if got.len() < data.len() {
            assert!(h.engine.poll_timeout().unwrap() <= h.now);
        }
        h.engine.batch(h.now, &mut h.io, &mut h.out).timeout();
    }
    assert!(got == data);
    assert!(rounds >= 3);
}

/// A guest whose device segments for it (pasta's tap offers TSO) sends segments far larger
/// than the MSS it was told, up to 64 KiB: they are data like any other, written whole and
/// acknowledged.
#[test]
fn a_segment_larger_than_the_mss_goes_to_the_host_whole() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).space = 1 << 20;
    let big = pattern(65_000, 7);
    g.data(&mut h, &big);
    assert_eq!(h.io.sock(s).written, big);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq, "all of it is acknowledged");
    g.data(&mut h, b"and a small one after it");
    assert_eq!(&h.io.sock(s).written[65_000..], b"and a small one after it");
    h.check();
}
