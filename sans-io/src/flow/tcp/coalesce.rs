//! Guest data coalesced per read: consecutive in-order segments of one flow from one batch of
//! guest frames go to the host socket in one [`StreamSockets::send_vectored`] call (one
//! `sendmsg`), the payloads still in the frames they came in.
//!
//! The outcome is what sending segment by segment gives. A segment is queued only where a
//! full write would change nothing but `rcv_nxt`, the bytes counted and `ack_due` (no prompt
//! in flight, no hole, no FIN, a stash at hand for a short write), and the flow goes on as if
//! the write had been full. A later segment joins the flow's run only if nothing before its
//! write can tell the difference: in order, acknowledging nothing new, no SYN, RST or FIN.
//! Anything else for the flow writes the run out first, and so does the end of the frames.
//! When the write comes up short, the flow is wound back to where the short segment met the
//! socket and the rest of the run is handled as one by one: the rest of that segment stashed,
//! the segments after it through the usual path (dropped and counted while the stash is full,
//! answered with a RST once the flow is gone).
//!
//! [`StreamSockets::send_vectored`]: crate::flow::StreamSockets::send_vectored

use std::ops::ControlFlow;

use super::emit::rst_reply;
use super::flow::Flow;
use super::seq::SegmentSeq;
use super::to_host::{guest_data, send_payload, wrote};
use super::{Cx, FlowKey, Next, Phase, Tcp};
use crate::wire::external::{Payload, SendPiece};
use crate::wire::tcp::{flags, Segment};

/// Segments queued at most, over all flows, in one batch of frames: when full, a flow's run
/// goes out before it takes another segment, and other flows send as they come.
pub const MAX_QUEUED: usize = 64;

/// A segment whose in-order data waits to be written with its flow's run.
#[derive(Debug, Clone, Copy)]
struct Queued<'f> {
    idx: u32,
    seg: Segment<'f>,
    /// The new data: the payload past what the flow had already received.
    data: Payload<'f>,
}

/// The runs of one batch of frames, borrowing the frames: `Batch::frames` owns one and writes
/// every run out before it returns.
#[derive(Debug)]
pub struct SendRuns<'f> {
    queued: [Option<Queued<'f>>; MAX_QUEUED],
    len: usize,
}

impl Default for SendRuns<'_> {
    fn default() -> Self {
        SendRuns {
            queued: [None; MAX_QUEUED],
            len: 0,
        }
    }
}

impl<'f> SendRuns<'f> {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len == MAX_QUEUED
    }

    /// Flow `idx`'s segments, in order.
    fn of_flow(&self, idx: u32) -> impl Iterator<Item = &Queued<'f>> + Clone {
        self.queued[..self.len]
            .iter()
            .flatten()
            .filter(move |q| q.idx == idx)
    }

    /// Forgets flow `idx`'s segments, keeping the others in order.
    fn remove_flow(&mut self, idx: u32) {
        let mut kept = 0;
        for i in 0..self.len {
            if self.queued[i].is_some_and(|q| q.idx != idx) {
                self.queued.swap(kept, i);
                kept += 1;
            }
        }
        self.len = kept;
    }

    fn first_flow(&self) -> Option<u32> {
        self.queued[..self.len]
            .iter()
            .flatten()
            .map(|q| q.idx)
            .next()
    }
}

/// Where `guest_data` may queue a segment of flow `idx`.
pub(super) struct RunSlot<'r, 'f> {
    pub(super) runs: &'r mut SendRuns<'f>,
    pub(super) idx: u32,
}

impl<'f> RunSlot<'_, 'f> {
    /// Queues `data`, the new part of `seg`, if there is room; marks the flow as having a run.
    pub(super) fn queue(self, f: &mut Flow, seg: &Segment<'f>, data: Payload<'f>) -> bool {
        if self.runs.is_full() {
            return false;
        }
        self.runs.queued[self.runs.len] = Some(Queued {
            idx: self.idx,
            seg: *seg,
            data,
        });
        self.runs.len += 1;
        f.queued = true;
        true
    }
}

/// Whether `seg` may join `f`'s run: its handling up to the write doesn't depend on how the
/// run's write went, and changes nothing the run's own handling reads. (Its ACK acknowledging
/// nothing new means no discard, no rewind, no frame to the guest.)
fn continues_run(f: &Flow, seg: &Segment<'_>) -> bool {
    f.phase == Phase::Established
        && seg.flags & (flags::ACK | flags::SYN | flags::RST | flags::FIN) == flags::ACK
        && !seg.data().is_empty()
        && seg.seq_num() == f.rcv_nxt
        && !seg.ack_num().is_after(f.snd_una)
}

impl Tcp {
    /// Before `seg` is handled by flow `idx`: writes the flow's run out unless `seg` may
    /// join it. Returns whether it did (the flow may be gone then).
    pub(super) fn settle_run(
        &mut self,
        cx: &mut Cx<'_>,
        runs: &mut SendRuns<'_>,
        idx: u32,
        seg: &Segment<'_>,
    ) -> bool {
        let Some(f) = self.table.get(idx).filter(|f| f.queued) else {
            return false;
        };
        if runs.is_full() || !continues_run(f, seg) {
            self.write_run(cx, runs, idx);
            return true;
        }
        false
    }

    /// Writes every run out (the frames they borrow are going away).
    pub fn write_runs(&mut self, cx: &mut Cx<'_>, runs: &mut SendRuns<'_>) {
        while let Some(idx) = runs.first_flow() {
            self.write_run(cx, runs, idx);
        }
    }

    /// Writes flow `idx`'s run in one call, and settles the flow as one by one would have.
    fn write_run(&mut self, cx: &mut Cx<'_>, runs: &mut SendRuns<'_>, idx: u32) {
        self.write_run_of(cx, runs, idx);
        runs.remove_flow(idx);
    }

    fn write_run_of(&mut self, cx: &mut Cx<'_>, runs: &SendRuns<'_>, idx: u32) {
        let Some(f) = self.table.get_mut(idx) else {
            return;
        };
        f.queued = false;
        let Some(s) = f.sock else { return };
        let mut slices: [&[u8]; MAX_QUEUED] = [&[]; MAX_QUEUED];
        let mut pieces = [SendPiece::Bytes(&[]); 2 * MAX_QUEUED];
        let (mut n, mut p, mut in_place) = (0, 0, false);
        for q in runs.of_flow(idx) {
            slices[n] = q.data.bytes;
            n += 1;
            for piece in q.data.pieces().into_iter().filter(|p| !p.is_empty()) {
                in_place |= matches!(piece, SendPiece::External(_));
                pieces[p] = piece;
                p += 1;
            }
        }
        let total: usize = runs.of_flow(idx).map(|q| q.data.len()).sum();
        let result = if in_place {
            cx.io.send_pieces(s, &pieces[..p], cx.external)
        } else {
            cx.io.send_vectored(s, &slices[..n])
        };
        let written = (*result.as_ref().unwrap_or(&0)).min(total);
        if written == total {
            return; // All went: the flow is as the run left it.
        }
        // The first segment not written whole, and what went before it.
        let mut run = runs.of_flow(idx);
        let mut before = 0;
        let Some(short) = run.by_ref().find(|q| {
            let stops = before + q.data.len() > written;
            if !stops {
                before += q.data.len();
            }
            stops
        }) else {
            return;
        };
        // Wound back to where that segment met the socket.
        let unsent = total - before;
        f.rcv_nxt = f.rcv_nxt - unsent as u32;
        cx.counters.bytes_to_host -= unsent as u64;
        let answer = if before == 0 {
            // It led the run: the call's answer is its own.
            result
        } else if written > before {
            Ok(written - before)
        } else {
            // Stopped right at its start: whether its own send would fail or find no room,
            // only that send says.
            send_payload(cx, s, short.data)
        };
        let key = FlowKey {
            guest: f.guest,
            peer: f.peer,
        };
        let next = match wrote(cx, f, short.data, answer, &mut self.stashes) {
            ControlFlow::Break(next) => next,
            ControlFlow::Continue(()) => Next::Keep,
        };
        self.after(cx, idx, next);
        // The rest as they would have come, the flow's state past the short write.
        for q in run {
            match self.table.get_mut(idx) {
                Some(f) => {
                    let next = guest_data(cx, f, &q.seg, &mut self.stashes, None);
                    self.after(cx, idx, next);
                }
                None => rst_reply(cx, key, &q.seg),
            }
        }
    }
}
