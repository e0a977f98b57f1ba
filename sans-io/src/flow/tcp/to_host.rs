//! Guest to host: in-order data written to the socket from the frame it came in, the stash
//! for the rest of a partial write, the guest's FIN passed on, and hole prompts while the
//! guest resends what we dropped (see the module documentation).

use std::io;
use std::ops::ControlFlow;
use std::time::Duration;

use super::closing::{shutdown_if_due, ToHostClose};
use super::coalesce::{RunSlot, MAX_QUEUED};
use super::emit::send_ack;
use super::flow::Flow;
use super::seq::{SegmentSeq, SeqNum};
use super::timers::Timer;
use super::window::{nudge_window, refresh_window};
use super::{
    Cx, Next, DUP_ACK_THRESHOLD, FIN_TIMEOUT, MAX_STASHES, PROMPT_RETRIES, PROMPT_WAIT_MAX,
    PROMPT_WAIT_MIN,
};
use crate::flow::SockRef;
use crate::time::Instant;
use crate::wire::external::Payload;
use crate::wire::tcp::{flags, Segment};

/// A hole prompt in flight: ACKs for `seq` went out at `first`, and go again when
/// [`Timer::Prompt`] fires unless data at `seq` arrives first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prompt {
    pub(super) seq: SeqNum,
    pub(super) first: Instant,
    pub(super) tries: u8,
    /// Our prompt (rather than a wait for the guest's own fast retransmit): its answer
    /// measures how long prompts take.
    pub(super) ours: bool,
}

impl Flow {
    /// Data the guest sent beyond `rcv_nxt` was dropped, and it hasn't all come again yet.
    pub(super) fn recovering(&self) -> bool {
        self.ooo_edge.is_some_and(|e| self.rcv_nxt.is_before(e))
    }

    /// How long to wait for the answer to a hole prompt sent `tries` times before.
    pub(super) fn prompt_wait(&self, tries: u8) -> Duration {
        let base = (self.prompt_rtt * 2).clamp(PROMPT_WAIT_MIN, PROMPT_WAIT_MAX);
        base * (1u32 << tries.min(8))
    }

    /// Starts waiting for the answer to a hole prompt for `rcv_nxt`: ours, or (`ours` false)
    /// the duplicate ACKs that should make the guest resend the first hole.
    pub(super) fn start_prompt(&mut self, now: Instant, ours: bool) {
        let p = Prompt {
            seq: self.rcv_nxt,
            first: now,
            tries: 0,
            ours,
        };
        self.wait_for_prompt(p, now);
    }

    fn wait_for_prompt(&mut self, p: Prompt, now: Instant) {
        self.timers
            .start(Timer::Prompt, now + self.prompt_wait(p.tries));
        self.prompt = Some(p);
    }

    /// The prompt in flight, no longer waited for.
    pub(super) fn end_prompt(&mut self) -> Option<Prompt> {
        self.timers.stop(Timer::Prompt);
        self.prompt.take()
    }
}

/// Stash buffers in use over all flows, at most [`MAX_STASHES`].
#[derive(Debug, Default)]
pub(super) struct StashBudget {
    in_use: usize,
}

impl StashBudget {
    pub(super) fn is_full(&self) -> bool {
        self.in_use >= MAX_STASHES
    }

    pub(super) fn take(&mut self) {
        self.in_use += 1;
    }

    pub(super) fn give_back(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// Room left for every segment a batch could queue to take a stash after all, so that
    /// queuing never changes which flow gets one.
    pub(super) fn has_headroom(&self) -> bool {
        self.in_use + MAX_QUEUED < MAX_STASHES
    }
}

/// An established flow's data and FIN, once its ACK is processed. With `run`, in-order data
/// that may be is queued on it rather than sent (see `coalesce`).
pub(super) fn guest_data<'f>(
    cx: &mut Cx<'_>,
    f: &mut Flow,
    seg: &Segment<'f>,
    stashes: &mut StashBudget,
    run: Option<RunSlot<'_, 'f>>,
) -> Next {
    let fin = seg.has(flags::FIN);
    let seq = seg.seq_num();
    let payload = seg.data();
    if payload.is_empty() && !fin {
        if seq == f.rcv_nxt - 1 {
            // Keepalive or window probe: answer with the window as it is now.
            refresh_window(cx, f);
            send_ack(cx, f);
        }
        return Next::Keep;
    }
    if f.guest_fin() {
        // Retransmitted FIN, or data after it: say where we are.
        send_ack(cx, f);
        return Next::Keep;
    }
    if seq.is_after(f.rcv_nxt) {
        cx.counters.out_of_order += 1;
        // Lost to us: remember how far the guest got (within the window; anything beyond is
        // not a segment a sane guest sent).
        if seq.is_before(f.right_edge) {
            let end = seq + payload.len() as u32;
            if f.ooo_edge.is_none_or(|e| end.is_after(e)) {
                f.ooo_edge = Some(end);
            }
            if f.prompt.is_none() {
                // Our duplicate ACKs should make the guest resend the hole; if they don't
                // (too few, or lost, or its resent segment lost), a prompt will.
                f.start_prompt(cx.now, false);
            }
        }
        send_ack(cx, f);
        return Next::Keep;
    }
    let off = f.rcv_nxt.since(seq) as usize;
    if off > payload.len() || (off == payload.len() && !fin) {
        // Old: a duplicate, or a one-byte keepalive.
        refresh_window(cx, f);
        send_ack(cx, f);
        return Next::Keep;
    }
    let data = payload.skip(off);
    if !data.is_empty() {
        let next = flush_stash(cx, f);
        if next != Next::Keep {
            return next;
        }
        if f.stash_len() > 0 {
            cx.counters.no_room_drops += 1;
            f.starved = true;
            return Next::Keep;
        }
        let Some(s) = f.sock else { return Next::Keep };
        let queued = run
            .filter(|_| !fin && may_queue(f, stashes))
            .is_some_and(|slot| slot.queue(f, seg, data));
        let sent = if queued {
            // Written as a whole for now: the run's write winds back what didn't go.
            Ok(data.len())
        } else {
            send_payload(cx, s, data)
        };
        if let ControlFlow::Break(next) = wrote(cx, f, data, sent, stashes) {
            return next;
        }
    }
    if fin {
        f.to_host = ToHostClose::FinReceived;
        f.rcv_nxt += 1;
        f.ack_due = true;
        if f.fin_seq().is_some() && !f.timers.is_running(Timer::PhaseEnd) {
            f.timers.start(Timer::PhaseEnd, cx.now + FIN_TIMEOUT);
        }
        return shutdown_if_due(cx, f);
    }
    Next::Keep
}

/// Whether in-order data for `f` may be queued on a run: a full write would change nothing
/// but `rcv_nxt`, the bytes counted and `ack_due` (no prompt in flight, no hole), and a
/// short one could stash its rest as a send would.
fn may_queue(f: &Flow, stashes: &StashBudget) -> bool {
    f.prompt.is_none() && f.ooo_edge.is_none() && (f.stash.capacity() > 0 || stashes.has_headroom())
}

/// What an in-order write of `data` that `sent` says how it went leaves: the rest of a short
/// one stashed, `rcv_nxt` and the ACK moved on, a hole prompt answered. `Break` ends the
/// segment's handling there.
pub(super) fn wrote(
    cx: &mut Cx<'_>,
    f: &mut Flow,
    data: Payload<'_>,
    sent: io::Result<usize>,
    stashes: &mut StashBudget,
) -> ControlFlow<Next> {
    let n = match sent {
        Ok(n) => n.min(data.len()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return ControlFlow::Break(Next::Abort { rst_guest: true }),
    };
    cx.counters.bytes_to_host += n as u64;
    // What this write takes the flow past: all of `data`, unless a stash can't hold its rest.
    let mut taken = data.len();
    if n < data.len() {
        let rest = data.skip(n);
        if f.stash.capacity() == 0 && stashes.is_full() {
            cx.counters.stash_unavailable += 1;
            f.rcv_nxt += n as u32;
            if n == 0 {
                cx.counters.no_room_drops += 1;
            }
            f.starved = true;
            f.ack_due = true;
            return ControlFlow::Break(Next::Keep);
        }
        if f.stash.capacity() == 0 {
            f.stash = Vec::with_capacity((f.rcv_mss as usize).max(rest.len()));
            stashes.take();
        }
        let stashed = stash_rest(cx, f, rest);
        // A rest the link couldn't read back in full (it shouldn't happen): what is missing
        // is not acknowledged, and the guest sends it again.
        taken = n + stashed;
        cx.counters.stash_uses += 1;
    }
    f.rcv_nxt += taken as u32;
    f.ack_due = true;
    f.holding.took(taken as u32, cx.now);
    if let Some(p) = f.end_prompt().filter(|p| p.ours) {
        // Answered (by the resent segment, or one sent anyway): measured from the first
        // prompt, which errs on the long side if it was repeated.
        let rtt = cx.now.saturating_since(p.first);
        f.prompt_rtt = if f.prompt_rtt.is_zero() {
            rtt
        } else {
            (f.prompt_rtt * 7 + rtt) / 8
        };
    }
    if f.recovering() {
        // The guest is resending into a hole, and what it sent beyond was dropped.
        f.hole_prompt = true;
    } else if f.ooo_edge.take().is_some() {
        // All resent. The ACK saying so reopens the window we held, and the guest has
        // nothing else in flight to make up for its loss: it goes out twice.
        f.hole_prompt = false;
        f.ack_twice = true;
    }
    ControlFlow::Continue(())
}

/// Sends `data` as far as the socket takes it now: from our memory, or through the link for
/// a rest it left in place.
pub(super) fn send_payload(cx: &mut Cx<'_>, s: SockRef, data: Payload<'_>) -> io::Result<usize> {
    if data.in_our_memory() {
        return cx.io.send(s, data.bytes);
    }
    cx.io.send_pieces(s, &data.pieces(), cx.external)
}

/// Copies `rest` into `f`'s stash (the link reading back what it left in place); returns how
/// many bytes that was.
fn stash_rest(cx: &mut Cx<'_>, f: &mut Flow, rest: Payload<'_>) -> usize {
    f.stash.clear();
    f.stash.extend_from_slice(rest.bytes);
    f.stash_at = 0;
    if let Some(r) = rest.rest.filter(|r| r.len > 0) {
        let at = f.stash.len();
        f.stash.resize(at + r.len, 0);
        let got = cx.external.read(r, &mut f.stash[at..]);
        f.stash.truncate(at + got);
    }
    f.stash.len()
}

/// Writes what the stash holds. `Keep` unless the socket failed.
pub(super) fn flush_stash(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    if f.stash_len() == 0 {
        return Next::Keep;
    }
    let Some(s) = f.sock else { return Next::Keep };
    match cx.io.send(s, &f.stash[f.stash_at..]) {
        Ok(n) => {
            let n = n.min(f.stash_len());
            f.stash_at += n;
            cx.counters.bytes_to_host += n as u64;
            if f.stash_len() == 0 {
                f.stash.clear();
                f.stash_at = 0;
                return shutdown_if_due(cx, f);
            }
            Next::Keep
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Keep,
        Err(_) => Next::Abort { rst_guest: true },
    }
}

/// The hole prompt's timer, if due: unanswered, the prompt goes out again.
pub(super) fn repeat_prompt(cx: &mut Cx<'_>, f: &mut Flow) {
    let now = cx.now;
    if !f.timers.due(Timer::Prompt, now) {
        return;
    }
    if let Some(p) = f.end_prompt() {
        let waiting_for_room = f.starved || f.stash_len() > 0;
        if f.recovering() && f.rcv_nxt == p.seq && p.tries < PROMPT_RETRIES && !waiting_for_room {
            // Unanswered: the resent segment or our ACKs were lost. Again, as a
            // window update first, since a guest counts duplicates only after an
            // ACK that changed something. (Data dropped for want of room is
            // asked for again once there is room.)
            cx.counters.prompt_repeats += 1;
            nudge_window(cx, f);
            for _ in 0..=DUP_ACK_THRESHOLD {
                send_ack(cx, f);
            }
            let again = Prompt {
                tries: p.tries + 1,
                ..p
            };
            f.wait_for_prompt(again, now);
        }
    }
}
