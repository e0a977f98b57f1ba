//! The flows' timers: retransmission, handshake retries, connect, FIN and inactivity
//! timeouts, TIME_WAIT, hole prompts, room measurements and held ACKs. Each flow keeps one
//! table of them ([`Timers`], by [`Timer`]); its deadline in the flow table is the earliest
//! that applies to its phase.

use super::emit::send_syn;
use super::flow::Flow;
use super::handshake::refuse_connect;
use super::held_ack::{release_held_ack, HOLD_GRAIN};
use super::to_guest::{retransmit_due, rto};
use super::to_host::repeat_prompt;
use super::window::poll_room;
use super::{Cx, Next, Phase, Tcp, ACT_TIMEOUT, SYN_RETRIES};
use crate::time::Instant;
use core::time::Duration;

/// The grain of the long timers (see [`Timers::start`]).
pub(super) const COARSE_TICK: Duration = Duration::from_millis(100);

/// `at`, or the next multiple of `tick` after it.
fn round_up(at: Instant, tick: Duration) -> Instant {
    let tick = tick.as_nanos() as u64;
    Instant::from_nanos(at.as_nanos().div_ceil(tick).saturating_mul(tick))
}

/// What a flow's timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Retransmission, a handshake retry or a window probe (see [`rto`]).
    Retransmit,
    /// The phase's own limit: the host connect's ([`super::CONNECT_TIMEOUT`]),
    /// [`super::FIN_TIMEOUT`] once both FINs are out, or the end of TIME_WAIT.
    PhaseEnd,
    /// [`ACT_TIMEOUT`] after the last activity. Established flows only.
    Inactivity,
    /// Repeat the hole prompt (see `to_host`). Established flows only.
    Prompt,
    /// Measure the room again (see `window`). Established flows only.
    RoomPoll,
    /// Send the ACK held for the host's answer (see `held_ack`). Established flows only.
    HeldAck,
}

impl Timer {
    const ALL: [Timer; 6] = [
        Timer::Retransmit,
        Timer::PhaseEnd,
        Timer::Inactivity,
        Timer::Prompt,
        Timer::RoomPoll,
        Timer::HeldAck,
    ];

    /// Whether it runs in every phase, rather than only once established.
    fn in_every_phase(self) -> bool {
        matches!(self, Timer::Retransmit | Timer::PhaseEnd)
    }
}

/// A flow's timers: when each is due, if it runs.
#[derive(Debug, Clone, Default)]
pub(super) struct Timers([Option<Instant>; Timer::ALL.len()]);

impl Timers {
    pub(super) fn at(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }

    pub(super) fn is_running(&self, t: Timer) -> bool {
        self.at(t).is_some()
    }

    /// Whether `t` runs and is due at `now`.
    pub(super) fn due(&self, t: Timer, now: Instant) -> bool {
        self.at(t).is_some_and(|d| d <= now)
    }

    /// Starts `t` for `at`; a phase's limit or the inactivity timeout, seconds long, for `at`
    /// rounded up to [`COARSE_TICK`], so that the expiries of flows that ended close together
    /// (TIME_WAIT after each of many short connections) come due together: one wake-up for
    /// them all rather than one each. A held ACK's the same way, to [`HOLD_GRAIN`].
    pub(super) fn start(&mut self, t: Timer, at: Instant) {
        let at = match t {
            Timer::PhaseEnd | Timer::Inactivity => round_up(at, COARSE_TICK),
            Timer::HeldAck => round_up(at, HOLD_GRAIN),
            Timer::Retransmit | Timer::Prompt | Timer::RoomPoll => at,
        };
        self.0[t as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
}

impl Flow {
    /// When this flow next needs its timer handled.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let established = self.phase == Phase::Established;
        Timer::ALL
            .into_iter()
            .filter(|t| established || t.in_every_phase())
            .filter_map(|t| self.timers.at(t))
            .min()
    }

    /// Something happened on the flow: the inactivity timeout starts again.
    pub(super) fn touch(&mut self, now: Instant) {
        self.timers.start(Timer::Inactivity, now + ACT_TIMEOUT);
    }
}

impl Tcp {
    /// Runs what is due at `now`, then any pending batch work.
    pub fn handle_timeout(&mut self, cx: &mut Cx<'_>) {
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        while let Some(idx) = self.table.pop_due(cx.now) {
            due.push(idx);
        }
        for &idx in &due {
            let next = self.timer_for_flow(cx, idx);
            self.after(cx, idx, next);
        }
        due.clear();
        self.scratch = due;
        self.flush(cx);
    }

    fn timer_for_flow(&mut self, cx: &mut Cx<'_>, idx: u32) -> Next {
        let Some(f) = self.table.get_mut(idx) else {
            return Next::Keep;
        };
        let now = cx.now;
        match f.phase {
            Phase::TimeWait => {
                if f.timers.due(Timer::PhaseEnd, now) {
                    return Next::Free;
                }
                Next::Keep
            }
            Phase::Connecting => {
                if f.timers.due(Timer::PhaseEnd, now) {
                    cx.counters.timeouts += 1;
                    return refuse_connect(cx, f, &mut self.tombstones);
                }
                Next::Keep
            }
            Phase::SynAckSent | Phase::SynSent => {
                if !f.timers.due(Timer::Retransmit, now) {
                    return Next::Keep;
                }
                if f.retries >= SYN_RETRIES {
                    cx.counters.timeouts += 1;
                    return Next::Abort {
                        rst_guest: f.phase == Phase::SynAckSent,
                    };
                }
                f.retries += 1;
                cx.counters.retransmissions += 1;
                send_syn(cx, f, f.phase == Phase::SynAckSent);
                f.timers.start(Timer::Retransmit, now + rto(f.retries));
                Next::Keep
            }
            Phase::Established => {
                if f.timers.due(Timer::Inactivity, now) {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
                if f.timers.due(Timer::PhaseEnd, now) {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
                release_held_ack(cx, f);
                poll_room(cx, f);
                repeat_prompt(cx, f);
                retransmit_due(cx, f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::flow::tests::flow;
    use super::*;
    use crate::time::Instant;

    #[test]
    fn the_deadline_is_the_earliest_timer_and_long_ones_are_coarse() {
        let mut f = flow();
        assert_eq!(f.deadline(), Some(Instant::ZERO + ACT_TIMEOUT));
        f.timers.start(Timer::Retransmit, Instant::from_millis(150));
        f.timers.start(Timer::PhaseEnd, Instant::from_millis(3));
        // The phase's limit comes due at the tick after it: still before the retransmission.
        assert_eq!(f.deadline(), Some(Instant::ZERO + COARSE_TICK));
        // Short timers keep their instant.
        f.timers.start(Timer::Retransmit, Instant::from_millis(5));
        assert_eq!(f.deadline(), Some(Instant::from_millis(5)));
        f.phase = Phase::TimeWait;
        // On a tick already: unchanged.
        f.timers
            .start(Timer::PhaseEnd, Instant::ZERO + 2 * COARSE_TICK);
        f.timers.stop(Timer::Retransmit);
        assert_eq!(f.deadline(), Some(Instant::ZERO + 2 * COARSE_TICK));
        // Flows ending within a tick of each other come due together.
        let mut g = flow();
        g.phase = Phase::TimeWait;
        g.timers.start(Timer::PhaseEnd, Instant::from_millis(101));
        f.timers.start(Timer::PhaseEnd, Instant::from_millis(199));
        assert_eq!(f.deadline(), g.deadline());
    }
}
