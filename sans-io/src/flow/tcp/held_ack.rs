//! Held ACKs: the ACK for a little guest data waits a moment for the host's answer, whose
//! first frame then carries it, as a receiving TCP delays its ACK for a request (RFC 9293
//! section 3.8.6.3; Linux's "pingpong" mode). A request and its answer then cost the guest
//! one frame from us rather than two, and its stack one ACK less to process, which is most of
//! what a short exchange costs beyond the wake-ups.
//!
//! An ACK is held only for less than one full segment of data not yet acknowledged
//! ([`HOLD_MAX_BYTES`]: bulk data is never held), while the window left is at least half the
//! widest we offered (so the guest never waits for a window update), and never for a FIN, a
//! hole prompt or anything else the guest is waiting on. If no answer comes within
//! [`ACK_HOLD`] (rounded up to [`HOLD_GRAIN`]), the ACK goes alone, and the flow holds no ACK
//! until the host has answered guest data in less than [`ACK_HOLD`] again: a server slower
//! than that holds nothing after its first answer, and a passing stall of the machine costs
//! one exchange's hold. A guest
//! that sends more right after an ACK went alone, before any answer, was waiting for it
//! (Nagle's algorithm holds a second small write until the first is acknowledged, and the
//! server may wait for both): then 2, 4, 8... prompt answers are wanted before holding again
//! (doubling each time, up to [`MAX_WAIT_SHIFT`] doublings), so that such a guest pays the
//! hold ever more rarely.

use std::time::Duration;

use super::emit::send_ack;
use super::flow::Flow;
use super::timers::Timer;
use super::window::refresh_window;
use super::{Cx, Phase};
use crate::time::Instant;

/// How long an ACK waits for the host's answer to carry it, at least: long enough for a
/// server on the same host or network, far below the 40 ms a Linux receiver's delayed ACK
/// takes at least.
pub const ACK_HOLD: Duration = Duration::from_millis(1);
/// A hold ends at the first multiple of this after [`ACK_HOLD`]: the holds of a busy flow (or
/// of many) started within one grain come due together, so that the driver's timer is
/// re-armed once a grain rather than once an exchange (each arming a system call, and on a
/// virtual machine the host's work to program the timer).
pub const HOLD_GRAIN: Duration = Duration::from_millis(1);
/// Times a guest waited for a held ACK count up to this many doublings of the prompt answers
/// wanted before holding again (1,024).
pub const MAX_WAIT_SHIFT: u8 = 10;
/// Unacknowledged guest data of this much (or of the guest's segment size), a full segment
/// on most links and a sign of bulk data, is acknowledged at once.
pub const HOLD_MAX_BYTES: u32 = 1460;

/// A flow's account of holding its ACKs.
#[derive(Debug, Clone, Default)]
pub(super) struct AckHolding {
    /// Guest data taken since a frame last carried `rcv_nxt`.
    pub(super) unacked: u32,
    /// When guest data was last taken.
    guest_data_at: Option<Instant>,
    /// Prompt answers wanted before holding again (none: holding).
    prompt_wanted: u16,
    /// Prompt answers since holding stopped.
    prompt_answers: u16,
    /// Times the guest sent more right after a held ACK went alone: it was waiting for it.
    guest_waited: u8,
    /// A held ACK went alone and no answer followed yet.
    released: bool,
}

impl AckHolding {
    /// Guest data of `n` bytes was taken at `now`.
    pub(super) fn took(&mut self, n: u32, now: Instant) {
        self.unacked = self.unacked.saturating_add(n);
        self.guest_data_at = Some(now);
        if std::mem::take(&mut self.released) {
            // More from the guest before any answer: it waited for the ACK we held.
            self.guest_waited = (self.guest_waited + 1).min(MAX_WAIT_SHIFT);
            self.prompt_wanted = 1 << self.guest_waited;
        }
    }
}

impl Flow {
    /// A frame carrying `rcv_nxt` goes to the guest: nothing is held any more.
    pub(super) fn ack_sent(&mut self) {
        self.holding.unacked = 0;
        // The flow's entry in the table's timer set stays where the hold put it: moving it
        // later at every answer would re-arm the driver's timer at every exchange, where a
        // stale entry costs one wake-up a grain (see `HOLD_GRAIN`).
        self.timers.stop(Timer::HeldAck);
    }

    /// Whether the ACK due now for new guest data may wait for the host's answer.
    fn may_hold_ack(&self) -> bool {
        let h = &self.holding;
        h.prompt_wanted == 0
            && self.phase == Phase::Established
            && h.unacked > 0
            && h.unacked < HOLD_MAX_BYTES.min(self.rcv_mss)
            && !self.guest_fin()
            && !self.hole_prompt
            && !self.ack_twice
            && self.prompt.is_none()
            && self.ooo_edge.is_none()
            && !self.starved
            && self.stash_len() == 0
            && self.window_bytes() >= self.max_offered / 2
            && !self.window_too_small()
    }
}

/// The batch's ACK for `f`, if it may wait: held, with its timer running (not restarted by
/// more data), and `true`. The window is not measured: what is left of it is enough.
pub(super) fn hold_ack(cx: &mut Cx<'_>, f: &mut Flow) -> bool {
    if !f.may_hold_ack() {
        return false;
    }
    f.ack_due = false;
    if !f.timers.is_running(Timer::HeldAck) {
        f.timers.start(Timer::HeldAck, cx.now + ACK_HOLD);
    }
    true
}

/// Host data goes to the guest, its frames carrying `rcv_nxt`: a held ACK rode along, or
/// the host answered guest data promptly while ACKs weren't held.
pub(super) fn data_sent(cx: &mut Cx<'_>, f: &mut Flow) {
    let h = &mut f.holding;
    h.released = false;
    if f.timers.is_running(Timer::HeldAck) {
        cx.counters.acks_carried += 1;
    } else if h.prompt_wanted > 0
        && h.guest_data_at
            .is_some_and(|at| cx.now.saturating_since(at) < ACK_HOLD)
    {
        h.prompt_answers = h.prompt_answers.saturating_add(1);
        if h.prompt_answers >= h.prompt_wanted {
            h.prompt_wanted = 0;
            h.prompt_answers = 0;
        }
    }
    f.ack_sent();
}

/// The held ACK's timer, if due: no answer came in time, so the ACK goes alone, and the
/// flow holds none until answers come promptly again.
pub(super) fn release_held_ack(cx: &mut Cx<'_>, f: &mut Flow) {
    if !f.timers.due(Timer::HeldAck, cx.now) {
        return;
    }
    f.timers.stop(Timer::HeldAck);
    let h = &mut f.holding;
    h.released = true;
    h.prompt_wanted = 1 << h.guest_waited;
    h.prompt_answers = 0;
    cx.counters.acks_held_out += 1;
    refresh_window(cx, f);
    send_ack(cx, f);
}
