//! The window we offer the guest: the socket's room, measured, held while the guest fills
//! holes, nudged to make an ACK news, and updated as soon as the room grows while the guest
//! waits for it (`Writable` reports first, then measurements on a backed-off timer).

use std::time::Duration;

use super::emit::send_ack;
use super::flow::Flow;
use super::seq::SeqNum;
use super::timers::Timer;
use super::to_host::flush_stash;
use super::{Cx, Next, Phase, DUP_ACK_THRESHOLD, WUPDATE_POLL, WUPDATE_POLL_MAX};

impl Flow {
    /// The window we advertise is too small for the guest to send a segment into (it then
    /// waits for an update, or probes 200 ms and more later), and more than ever shrinking
    /// because we hold it.
    ///
    /// A sender avoiding silly windows (RFC 1122 4.2.3.4; Linux bounds its segments to half
    /// the largest window it was offered) sends once a full segment fits or half the widest
    /// window we ever offered: a window that small only because the socket's buffer is small
    /// is still usable. Only a window the guest's own data has filled is too small; telling
    /// the two apart keeps idle flows, whose window never fills, off the window-update path.
    pub(super) fn window_too_small(&self) -> bool {
        let segment = self.mss.min(self.max_offered / 2).max(1);
        self.phase == Phase::Established
            && !self.guest_fin()
            && !self.recovering()
            && u32::from(self.window_field()) << self.our_ws < segment
    }

    /// Moves the right edge to `edge`, remembering the widest window offered.
    pub(super) fn set_right_edge(&mut self, edge: SeqNum) {
        self.right_edge = edge;
        self.max_offered = self.max_offered.max(self.window_bytes());
    }

    /// The window up to the right edge, in bytes (none if the guest wrote past it).
    pub(super) fn window_bytes(&self) -> u32 {
        self.right_edge.diff(self.rcv_nxt).max(0) as u32
    }

    /// The window field for a segment: up to the right edge, scaled.
    pub(super) fn window_field(&self) -> u16 {
        (self.window_bytes() >> self.our_ws).min(u32::from(u16::MAX)) as u16
    }
}

/// The wait before the next measurement of the room after `polls` that found none.
pub(super) fn wupdate_poll_wait(polls: u8) -> Duration {
    (WUPDATE_POLL * (1u32 << polls.min(16))).min(WUPDATE_POLL_MAX)
}

/// Measures the socket's room and moves the right edge there.
pub(super) fn refresh_window(cx: &mut Cx<'_>, f: &mut Flow) {
    let Some(s) = f.sock else { return };
    let Ok(space) = cx.io.send_space(s) else {
        return;
    };
    let room = (space as usize).saturating_sub(f.stash_len()) as u32;
    let max = u32::from(u16::MAX) << f.our_ws;
    let mut edge = f.rcv_nxt + room.min(max);
    if let Some(ooo) = f.ooo_edge.filter(|_| f.recovering()) {
        // Hold the edge while the guest fills holes: new data beyond what it must resend
        // would only be dropped, and keep the recovery going.
        let held = if ooo.is_after(f.right_edge) {
            ooo
        } else {
            f.right_edge
        };
        if held.is_before(edge) {
            edge = held;
        }
    }
    f.set_right_edge(edge);
}

/// Moves the right edge one window unit further if the socket has the room, or else one
/// unit back: either way the next ACK is a window update, which a guest takes as news (the
/// duplicates after it then count).
pub(super) fn nudge_window(cx: &mut Cx<'_>, f: &mut Flow) {
    let Some(s) = f.sock else { return };
    let Ok(space) = cx.io.send_space(s) else {
        return;
    };
    let room = (space as usize).saturating_sub(f.stash_len()) as u32;
    let max = u32::from(u16::MAX) << f.our_ws;
    let limit = f.rcv_nxt + room.min(max);
    let unit = 1u32 << f.our_ws;
    let wider = f.right_edge + unit;
    if f.right_edge.is_before(f.rcv_nxt) {
        return;
    }
    if !wider.is_after(limit) && f.window_field() < u16::MAX {
        f.set_right_edge(wider);
    } else if f.window_field() > 1 {
        f.set_right_edge(f.right_edge - unit);
    }
}

/// `Writable` on the socket: write the stash, then tell the guest about the room, prompting
/// it to resend what we dropped for want of room.
pub(super) fn on_writable(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    let wanted = std::mem::take(&mut f.want_wupdate);
    if f.phase != Phase::Established {
        return Next::Keep;
    }
    let next = flush_stash(cx, f);
    if next == Next::Keep && f.stash_len() == 0 {
        let old_edge = f.right_edge;
        refresh_window(cx, f);
        if f.starved {
            f.starved = false;
            f.fruitless_writable = 0;
            // A window update, then duplicate ACKs to prompt a resend of
            // what we dropped.
            for _ in 0..=DUP_ACK_THRESHOLD {
                send_ack(cx, f);
            }
        } else if f.right_edge.is_after(old_edge) {
            f.fruitless_writable = 0;
            send_ack(cx, f);
        } else if wanted && f.window_too_small() {
            // No more room yet: the guest still waits. Keep listening, but a
            // level-triggered report that keeps coming without room would
            // spin the loop: after two in a row, measure on a timer instead.
            f.fruitless_writable += 1;
            if f.fruitless_writable < 2 {
                f.want_wupdate = true;
            } else {
                f.fruitless_writable = 0;
                f.wupdate_polls = 0;
                f.timers.start(Timer::RoomPoll, cx.now + WUPDATE_POLL);
            }
        }
    }
    next
}

/// The room-measuring timer, if due: a window update once the room grew.
pub(super) fn poll_room(cx: &mut Cx<'_>, f: &mut Flow) {
    let now = cx.now;
    if f.timers.due(Timer::RoomPoll, now) {
        f.timers.stop(Timer::RoomPoll);
        let old_edge = f.right_edge;
        refresh_window(cx, f);
        if f.right_edge.is_after(old_edge) {
            f.wupdate_polls = 0;
            send_ack(cx, f);
        } else if f.window_too_small() {
            // Still no room: the peer isn't reading. Measure again, each time
            // twice as late, so that a stalled flow costs next to nothing.
            f.wupdate_polls = f.wupdate_polls.saturating_add(1);
            f.timers
                .start(Timer::RoomPoll, now + wupdate_poll_wait(f.wupdate_polls));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::flow::tests::flow;
    use super::*;

    #[test]
    fn a_window_is_too_small_only_once_the_guests_data_filled_it() {
        let mut f = flow();
        f.mss = 65480;
        f.our_ws = 0;
        // A small send buffer: we never offered more than 40,000 bytes, less than a segment.
        f.set_right_edge(f.rcv_nxt + 40_000);
        f.max_offered = 40_000;
        assert!(!f.window_too_small(), "an idle flow's window is usable");
        // The guest sent 30,000 bytes into it: less than half the widest offer is left.
        f.rcv_nxt += 30_000;
        assert!(f.window_too_small());
        // A full segment always fits in a window of one segment or more.
        f.mss = 1460;
        assert!(!f.window_too_small());
    }

    #[test]
    fn room_measurements_back_off_to_a_cap() {
        assert_eq!(wupdate_poll_wait(0), WUPDATE_POLL);
        assert_eq!(wupdate_poll_wait(3), WUPDATE_POLL * 8);
        assert_eq!(wupdate_poll_wait(7), WUPDATE_POLL_MAX);
        assert_eq!(wupdate_poll_wait(u8::MAX), WUPDATE_POLL_MAX);
    }

    #[test]
    fn window_field_is_scaled_and_never_past_the_edge() {
        let mut f = flow();
        assert_eq!(f.window_field(), 256);
        f.rcv_nxt = f.right_edge + 10; // written past what we measured
        assert_eq!(f.window_field(), 0);
        f.our_ws = 0;
        f.right_edge = f.rcv_nxt + (1 << 20);
        assert_eq!(f.window_field(), u16::MAX);
    }
}
