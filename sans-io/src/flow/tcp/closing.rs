//! Closing, one direction at a time: how far each has got, as one state per direction, so
//! that only orders that can happen can be written (a socket shut down for writing after
//! the guest's FIN; our FIN placed after the host's end of stream, acknowledged after it was
//! placed). Either direction can keep going after the other has closed.

use super::flow::Flow;
use super::seq::SeqNum;
use super::{Cx, Next, Phase};

/// The guest-to-host direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToHostClose {
    Open,
    /// The guest's FIN arrived (and took its sequence number); the socket is not shut down
    /// yet, because the stash still holds bytes before it.
    FinReceived,
    /// Passed on: the socket is shut down for writing.
    Shut,
}

/// The host-to-guest direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToGuestClose {
    Open,
    /// The socket hit end of stream; the bytes before it are still being peeked, so our FIN's
    /// place is not known yet.
    Eof,
    /// Our FIN takes this sequence number, right after the last byte.
    FinAt(SeqNum),
    /// ... and the guest acknowledged it.
    FinAcked(SeqNum),
}

impl Flow {
    /// The guest's FIN has arrived.
    pub(super) fn guest_fin(&self) -> bool {
        self.to_host != ToHostClose::Open
    }

    /// Our FIN's sequence number, once its place is known.
    pub(super) fn fin_seq(&self) -> Option<SeqNum> {
        match self.to_guest {
            ToGuestClose::FinAt(s) | ToGuestClose::FinAcked(s) => Some(s),
            ToGuestClose::Open | ToGuestClose::Eof => None,
        }
    }

    pub(super) fn fin_acked(&self) -> bool {
        matches!(self.to_guest, ToGuestClose::FinAcked(_))
    }
}

/// Graceful end: both FINs acknowledged, nothing left to write.
pub(super) fn finish_check(f: &mut Flow) -> Next {
    if f.phase == Phase::Established
        && f.to_host == ToHostClose::Shut
        && f.fin_acked()
        && f.stash_len() == 0
    {
        Next::Finish
    } else {
        Next::Keep
    }
}

/// Passes the guest's FIN on once every byte before it is written. When the host's side
/// ended first and the guest has acknowledged our FIN, the flow finishes right away, and
/// closing the socket sends the FIN itself (every byte it received was acknowledged by the
/// guest, so discarded: nothing unread turns the close into a reset): no `shutdown` first.
pub(super) fn shutdown_if_due(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    if f.to_host == ToHostClose::FinReceived && f.stash_len() == 0 {
        if f.fin_acked() && f.phase == Phase::Established {
            f.to_host = ToHostClose::Shut;
            return Next::Finish;
        }
        let Some(s) = f.sock else { return Next::Keep };
        if cx.io.shutdown_write(s).is_err() {
            return Next::Abort { rst_guest: true };
        }
        f.to_host = ToHostClose::Shut;
    }
    Next::Keep
}
