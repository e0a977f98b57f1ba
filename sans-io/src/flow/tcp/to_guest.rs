//! Host to guest: data peeked from the socket into frames as far as the guest's window
//! allows, our FIN after its end, the guest's ACKs discarding what it got, and
//! retransmission (a rewind to what it acknowledged) on duplicate ACKs or the timer.

use std::cell::Cell;
use std::io;
use std::ops::ControlFlow;
use std::time::Duration;

use super::closing::ToGuestClose;
use super::emit::{emit, route, send_ack, window_probe};
use super::flow::Flow;
use super::held_ack::data_sent;
use super::seq::{SegmentSeq, SeqNum};
use super::timers::Timer;
use super::{
    Cx, Next, Phase, DUP_ACK_THRESHOLD, FIN_TIMEOUT, MAX_RETRIES, OUT_BUDGET, RTO_INITIAL, RTO_MAX,
};
use crate::flow::{PeekSlots, Peeked};
use crate::wire::parse::ETH_HEADER_LEN;
use crate::wire::tcp::{self as wtcp, flags, Header, Segment};

/// The retransmission timeout after `retries` timeouts.
pub(super) fn rto(retries: u8) -> Duration {
    RTO_INITIAL
        .checked_mul(1u32 << retries.min(16))
        .unwrap_or(RTO_MAX)
        .min(RTO_MAX)
}

/// The guest's acknowledgement and window: what it got leaves the socket, three duplicates
/// rewind for a fast retransmit. `Break` ends the segment's handling there.
pub(super) fn on_ack(cx: &mut Cx<'_>, f: &mut Flow, seg: &Segment<'_>) -> ControlFlow<Next> {
    let a = seg.ack_num();
    if a.is_after(f.snd_max) {
        send_ack(cx, f);
        return ControlFlow::Break(Next::Keep);
    }
    let wnd = u32::from(seg.window) << f.guest_ws;
    if a.is_after(f.snd_una) {
        let acked = a.since(f.snd_una);
        let mut data_acked = acked;
        if let Some(fin) = f.fin_seq() {
            if a == fin + 1 {
                f.to_guest = ToGuestClose::FinAcked(fin);
                data_acked -= 1;
            }
        }
        if data_acked > 0 {
            if let Some(s) = f.sock {
                if cx.io.discard(s, data_acked as usize).is_err() {
                    return ControlFlow::Break(Next::Abort { rst_guest: true });
                }
            }
        }
        f.snd_una = a;
        if f.snd_nxt.is_before(a) {
            f.snd_nxt = a;
        }
        f.retries = 0;
        f.dup_acks = 0;
        if f.in_flight() > 0 {
            f.timers.start(Timer::Retransmit, cx.now + rto(0));
        } else {
            f.timers.stop(Timer::Retransmit);
        }
        f.snd_wnd = wnd;
        // All we ever sent is acknowledged, and the last peek had found the socket empty: no
        // peek now (it would mostly hear EAGAIN, as after each answer of a request/response
        // exchange). Whatever came since that peek is reported as readable.
        let drained = f.exhausted && f.snd_una == f.snd_max && f.to_guest == ToGuestClose::Open;
        if !drained {
            f.exhausted = false;
            f.send_due = true;
        }
    } else if a == f.snd_una {
        let pure = seg.data().is_empty() && !seg.has(flags::FIN);
        if pure && f.in_flight() > 0 && wnd == f.snd_wnd {
            f.dup_acks = f.dup_acks.saturating_add(1);
            if f.dup_acks == DUP_ACK_THRESHOLD {
                cx.counters.retransmissions += 1;
                cx.counters.fast_retransmits += 1;
                f.snd_nxt = f.snd_una;
                f.exhausted = false;
                f.send_due = true;
            }
        }
        if wnd != f.snd_wnd {
            if f.snd_wnd == 0 {
                f.retries = 0;
                if f.in_flight() == 0 {
                    f.timers.stop(Timer::Retransmit);
                }
            }
            f.snd_wnd = wnd;
            f.send_due = true;
        }
    }
    follow_guest_window(cx, f, wnd);
    if f.snd_wnd == 0
        && f.in_flight() == 0
        && !f.timers.is_running(Timer::Retransmit)
        && !f.fin_acked()
    {
        // Persist: probe the closed window until it opens.
        f.timers.start(Timer::Retransmit, cx.now + rto(f.retries));
    }
    ControlFlow::Continue(())
}

/// At most this many segments are peeked from a socket by one call: about one TSO burst of
/// the host's stack at a 1460-byte MSS, and 64 frames of headroom in the output queue.
const PEEK_SLOTS: usize = 64;
/// And at most this many bytes, but always one segment: the lab measured several segments a
/// call 15-24 % faster at a 1500-byte MTU, but slower at 65520 bytes (one call copying many
/// 64 KiB segments holds the socket's lock while the peer's segments wait; BENCHMARKS.md), where
/// a call per segment costs little anyway.
const PEEK_BYTES: usize = 96 << 10;

/// How `want` bytes are cut into frames of `seg` bytes of payload for one peek: how many (at
/// least one, at most [`PEEK_SLOTS`] and about [`PEEK_BYTES`]), and their lengths, the last
/// taking what is left.
fn plan_frames(want: usize, seg: usize) -> (usize, [usize; PEEK_SLOTS]) {
    let count = want
        .div_ceil(seg)
        .min((PEEK_BYTES / seg).clamp(1, PEEK_SLOTS))
        .max(1);
    let asked = want.min(count * seg);
    let mut lens = [seg; PEEK_SLOTS];
    let last = count - 1;
    lens[last] = asked - last * seg;
    (count, lens)
}

/// The payload of a frame that carries many segments of `mss` bytes (a guest taking large
/// segments): as many whole segments as one IP packet holds behind headers ending at `at`
/// (Ethernet included), and at least one.
fn large_segment(mss: usize, at: usize) -> usize {
    let room = usize::from(u16::MAX).saturating_sub(at.saturating_sub(ETH_HEADER_LEN));
    (room / mss).max(1) * mss
}

/// Keeps the host socket's advertised window within the guest's (TCP_WINDOW_CLAMP), as C
/// passt does, from the guest's first ACK on: the peer then has no more in flight than the
/// guest takes, rather than as much as the socket's autotuned buffer (tens of MiB) would let
/// it burst, which in the lab reordered its segments across the CPUs' backlogs into spurious
/// retransmissions. The remote -> namespace path measured about twice as fast for it
/// (BENCHMARKS.md). Changes within 1 % are skipped to spare the system call. Called once an
/// ACK is handled, after the discard of what it acknowledged.
fn follow_guest_window(cx: &mut Cx<'_>, f: &mut Flow, wnd: u32) {
    let Some(s) = f.sock else { return };
    if let Some(prev) = f.host_window_clamp {
        if u64::from(wnd.abs_diff(prev)) * 100 <= u64::from(prev) {
            return;
        }
    }
    f.host_window_clamp = Some(wnd);
    cx.io.clamp_window(s, wnd);
}

/// Sends host data (and our FIN after its end) as far as the guest's window allows.
pub(super) fn send_data(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    let Some(s) = f.sock else { return Next::Keep };
    if f.phase != Phase::Established {
        return Next::Keep;
    }
    let r = route(cx, f.peer.ip(), f.guest.ip());
    // Whether the guest link takes large segments in lent buffers: asked once (the lender
    // looks at the device), not per peek.
    let large = cx.out.lends_large_tcp(r.src.is_ipv6());
    let was_idle = f.in_flight() == 0;
    let mut sent_any = false;
    loop {
        // Data left before our FIN, if its place is known.
        let mut until_fin = u32::MAX;
        if let Some(fin) = f.fin_seq() {
            if f.snd_nxt == fin {
                send_fin(cx, f);
                sent_any = true;
                break;
            }
            if !f.snd_nxt.is_before(fin) {
                break;
            }
            until_fin = fin.since(f.snd_nxt);
        }
        let flight = f.in_flight();
        if flight >= f.snd_wnd {
            break;
        }
        if cx.out.bytes() >= OUT_BUDGET {
            f.send_due = true;
            break;
        }
        // As much as the window allows, up to PEEK_SLOTS segments and PEEK_BYTES peeked by
        // one call, each straight into its frame's payload.
        let want = (f.snd_wnd - flight).min(until_fin) as usize;
        let mss = (f.mss as usize).max(1);
        let mut h = Header {
            src_port: f.peer.port(),
            dst_port: f.guest.port(),
            seq: f.snd_nxt.into(),
            ack: f.rcv_nxt.into(),
            flags: flags::ACK | flags::PSH,
            window: f.window_field(),
            mss: None,
            wscale: None,
        };
        let at = wtcp::payload_offset(&r, &h);
        // A guest that takes large segments in lent buffers gets frames of many segments
        // each; if its buffers hold none now, frames of one (tried once where a segment
        // fills a packet already).
        let large_seg = large
            .then(|| large_segment(mss, at))
            .filter(|&seg| seg > mss);
        let sizes = [large_seg, Some(mss)];
        let first_seq = f.snd_nxt;
        let csum = cx.out.l4_checksum();
        let io = &mut *cx.io;
        let mut got = Ok(Peeked::default());
        let mut lent = None;
        // Where our FIN goes, if it was placed already (a resend); whether it rode on the
        // last frame built (the host's stream ends with its bytes: our FIN goes with them, as
        // a sender's own stack would put it, not alone after them).
        let fin_at = f.fin_seq();
        let fin_in_frame = Cell::new(false);
        let fin_after = |p: &Peeked, total: usize| {
            total > 0
                && match fin_at {
                    Some(fin) => fin == first_seq + total as u32,
                    None => p.eof && p.n <= total,
                }
        };
        // What the lent peek got, for the headers written after it.
        let lent_peek = Cell::new(None);
        for seg in sizes.into_iter().flatten() {
            let (count, lens) = plan_frames(want, seg);
            // Into memory the guest link lends, where it does (vhost-user: the guest's
            // receive buffers, the kernel writing the payload there); else into the queue's
            // own frames, below.
            lent = cx
                .out
                .push_lent(
                    at,
                    &lens[..count],
                    u16::try_from(mss).unwrap_or(0),
                    |areas| {
                        got = io.peek_lent(s, flight as usize, areas);
                        lent_peek.set(got.as_ref().ok().map(|p| (p.n, fin_after(p, p.n))));
                        got.as_ref().map_or(0, |p| p.n)
                    },
                    |i, headers, n| {
                        h.seq = (first_seq + (i * seg) as u32).into();
                        if let Some((total, true)) = lent_peek.get() {
                            if i * seg + n == total {
                                h.flags |= flags::FIN;
                                fin_in_frame.set(true);
                            }
                        }
                        wtcp::write_headers_partial(headers, &r, &h, n)
                    },
                )
                // The ask was what the lender had room for.
                .map(|(frames, _)| lens[..frames].iter().sum::<usize>());
            if lent.is_some() {
                break;
            }
        }
        let asked = match lent {
            Some(asked) => asked,
            None => {
                let (count, lens) = plan_frames(want, mss);
                let asked = lens[..count].iter().sum();
                let stride = at + mss;
                let slots = PeekSlots {
                    first: at,
                    stride,
                    lens: &lens[..count],
                };
                let mut frame_lens = [0usize; PEEK_SLOTS];
                cx.out.push_slots_in_place(
                    stride,
                    &mut frame_lens[..count],
                    |region, frame_lens| {
                        got = io.peek_slots(s, flight as usize, region, slots);
                        let Ok(p) = got else { return };
                        let total = p.n.min(asked);
                        let fin_here = fin_after(&p, total);
                        let mut left = total;
                        for (i, frame_len) in frame_lens.iter_mut().enumerate() {
                            let n = left.min(slots.lens[i]);
                            if n == 0 {
                                break;
                            }
                            left -= n;
                            h.seq = (first_seq + (i * mss) as u32).into();
                            if fin_here && left == 0 {
                                h.flags |= flags::FIN;
                                fin_in_frame.set(true);
                            }
                            let frame = &mut region[i * stride..(i + 1) * stride];
                            *frame_len = wtcp::write_frame(frame, &r, &h, n, csum);
                        }
                    },
                );
                asked
            }
        };
        let (n, eof) = match got {
            Ok(p) => (p.n.min(asked), p.eof && p.n <= asked),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, false),
            Err(_) => return Next::Abort { rst_guest: true },
        };
        if eof && f.to_guest == ToGuestClose::Open {
            // What a `PeerClosed` would say, learnt from the peek itself.
            f.to_guest = ToGuestClose::Eof;
        }
        if n == 0 {
            f.exhausted = true;
            if f.to_guest == ToGuestClose::Eof {
                place_fin(cx, f, f.snd_nxt);
                continue;
            }
            break;
        }
        sent_any = true;
        let end = f.snd_nxt + n as u32;
        if end.is_after(f.snd_max) {
            cx.counters.bytes_to_guest += u64::from(end.since(f.snd_max));
            f.snd_max = end;
        }
        f.snd_nxt = end;
        if fin_in_frame.get() {
            f.exhausted = true;
            if f.fin_seq().is_none() {
                place_fin(cx, f, end);
            }
            fin_went(f);
            break;
        }
        if eof && f.to_guest == ToGuestClose::Eof {
            // The end follows these bytes: our FIN goes next, without another peek.
            f.exhausted = true;
            place_fin(cx, f, end);
            continue;
        }
        if n < asked {
            f.exhausted = true;
            if f.to_guest != ToGuestClose::Eof {
                break;
            }
        }
    }
    if sent_any {
        f.ack_due = false;
        data_sent(cx, f);
        if was_idle || !f.timers.is_running(Timer::Retransmit) {
            // A fresh flight: the timer starts now (not where a window probe left it).
            f.timers.start(Timer::Retransmit, cx.now + rto(f.retries));
        }
    }
    Next::Keep
}

/// The host's stream ends at `seq`: our FIN takes that sequence number.
fn place_fin(cx: &mut Cx<'_>, f: &mut Flow, seq: SeqNum) {
    f.to_guest = ToGuestClose::FinAt(seq);
    if f.guest_fin() && !f.timers.is_running(Timer::PhaseEnd) {
        f.timers.start(Timer::PhaseEnd, cx.now + FIN_TIMEOUT);
    }
}

pub(super) fn send_fin(cx: &mut Cx<'_>, f: &mut Flow) {
    emit(cx, f, flags::FIN | flags::ACK, f.snd_nxt);
    f.ack_sent();
    fin_went(f);
}

/// Our FIN went at `snd_nxt` (alone, or on the frame of the last bytes): it takes that
/// sequence number.
fn fin_went(f: &mut Flow) {
    f.snd_nxt += 1;
    if f.snd_nxt.is_after(f.snd_max) {
        f.snd_max = f.snd_nxt;
    }
}

/// The retransmission timer, if due: rewind and resend, or probe a closed window; reset
/// after [`MAX_RETRIES`] timeouts without progress.
pub(super) fn retransmit_due(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    let now = cx.now;
    if !f.timers.due(Timer::Retransmit, now) {
        return Next::Keep;
    }
    if f.in_flight() > 0 && f.retries >= MAX_RETRIES {
        cx.counters.timeouts += 1;
        return Next::Abort { rst_guest: true };
    }
    // Probing a closed window backs off but never gives up: a guest that answers
    // is alive, one that doesn't meets the inactivity timeout.
    f.retries = f
        .retries
        .saturating_add(1)
        .min(if f.in_flight() > 0 { u8::MAX } else { 8 });
    f.timers.start(Timer::Retransmit, now + rto(f.retries));
    if f.in_flight() > 0 {
        cx.counters.retransmissions += 1;
        f.snd_nxt = f.snd_una;
        f.dup_acks = 0;
        f.exhausted = false;
        let next = send_data(cx, f);
        if f.in_flight() == 0 && f.snd_wnd == 0 {
            window_probe(cx, f);
        }
        next
    } else if f.snd_wnd == 0 {
        window_probe(cx, f);
        Next::Keep
    } else {
        f.timers.stop(Timer::Retransmit);
        f.retries = 0;
        Next::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmission_timeout_backs_off_to_a_cap() {
        assert_eq!(rto(0), Duration::from_secs(1));
        assert_eq!(rto(3), Duration::from_secs(8));
        assert_eq!(rto(6), RTO_MAX);
        assert_eq!(rto(255), RTO_MAX);
    }

    #[test]
    fn a_peek_is_cut_into_frames_of_the_segment_size_the_last_taking_the_rest() {
        let (count, lens) = plan_frames(4000, 1460);
        assert_eq!(&lens[..count], &[1460, 1460, 1080]);
        // At most PEEK_BYTES, in whole segments; always one.
        let (count, lens) = plan_frames(1 << 20, 1460);
        assert_eq!(count, (PEEK_BYTES / 1460).min(PEEK_SLOTS));
        assert!(lens[..count].iter().all(|&l| l == 1460));
        let (count, lens) = plan_frames(1 << 20, 65_160);
        assert_eq!(&lens[..count], &[65_160]);
        let (count, lens) = plan_frames(1, 65_160);
        assert_eq!(&lens[..count], &[1]);
    }

    #[test]
    fn a_large_segment_is_whole_segments_that_fit_one_ip_packet() {
        // IPv4 and TCP headers without options behind Ethernet: 65,495 bytes of room.
        let at = ETH_HEADER_LEN + 20 + 20;
        assert_eq!(large_segment(1460, at), 44 * 1460);
        assert_eq!(large_segment(536, at), 122 * 536);
        assert!(large_segment(1460, at) + at - ETH_HEADER_LEN <= usize::from(u16::MAX));
        // A segment as large as the packet: one.
        assert_eq!(large_segment(65_480, at), 65_480);
        assert_eq!(large_segment(65_535, at), 65_535);
    }
}
