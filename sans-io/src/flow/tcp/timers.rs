//! The flows' timers: retransmission, handshake retries, connect, FIN and inactivity
//! timeouts, TIME_WAIT, hole prompts and room measurements.

use super::emit::send_syn;
use super::flow::Flow;
use super::handshake::refuse_connect;
use super::to_guest::{retransmit_due, rto};
use super::to_host::repeat_prompt;
use super::window::poll_room;
use super::{Cx, Next, Phase, Tcp, ACT_TIMEOUT, SYN_RETRIES};
use crate::time::Instant;

impl Flow {
    /// When this flow next needs its timer handled.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let mut d = [self.rto_at, self.phase_deadline]
            .into_iter()
            .flatten()
            .min();
        if self.phase == Phase::Established {
            let idle = self.last_activity + ACT_TIMEOUT;
            let idle = [self.prompt.map(|p| p.again_at), self.wupdate_poll_at]
                .into_iter()
                .flatten()
                .fold(idle, Instant::min);
            d = Some(d.map_or(idle, |d| d.min(idle)));
        }
        d
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
                if f.phase_deadline.is_some_and(|d| d <= now) {
                    return Next::Free;
                }
                Next::Keep
            }
            Phase::Connecting => {
                if f.phase_deadline.is_some_and(|d| d <= now) {
                    cx.counters.timeouts += 1;
                    return refuse_connect(cx, f, &mut self.tombstones);
                }
                Next::Keep
            }
            Phase::SynAckSent | Phase::SynSent => {
                if f.rto_at.is_none_or(|d| d > now) {
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
                f.rto_at = Some(now + rto(f.retries));
                Next::Keep
            }
            Phase::Established => {
                if f.last_activity + ACT_TIMEOUT <= now {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
                if f.phase_deadline.is_some_and(|d| d <= now) {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
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
    fn the_deadline_is_the_earliest_timer() {
        let mut f = flow();
        assert_eq!(f.deadline(), Some(Instant::ZERO + ACT_TIMEOUT));
        f.rto_at = Some(Instant::from_millis(5));
        f.phase_deadline = Some(Instant::from_millis(3));
        assert_eq!(f.deadline(), Some(Instant::from_millis(3)));
        f.phase = Phase::TimeWait;
        f.phase_deadline = Some(Instant::from_millis(9));
        f.rto_at = None;
        assert_eq!(f.deadline(), Some(Instant::from_millis(9)));
    }
}
