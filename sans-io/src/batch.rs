//! The driver contract, as a type: everything that reaches the engine comes in a [`Batch`].
//!
//! A driver (the OS shim's loop, the simulator, a test) opens a batch per wake-up with
//! [`Engine::batch`], feeds it what the wake-up found — guest frames ([`Batch::frame`],
//! [`Batch::frames`]), host socket events ([`Batch::socket`]), accepted connections
//! ([`Batch::accept`]), the timer ([`Batch::timeout`]) — and ends it with [`Batch::finish`],
//! which flushes and says when the engine next wants its timers run. Then it writes the
//! queued frames to the guest.
//!
//! The flush is why batches exist: TCP flows only *mark* ACKs and window updates due while
//! inputs come in, and the flush sends one per flow (with the window measured once), plus data
//! the guest's ACKs made room for. A batch dropped without `finish` flushes just the same, so
//! a driver can't forget it.
//!
//! Frames queued so far may be written out mid-batch ([`Batch::queue`]: a long batch's high
//! water mark): the flush only adds to the queue. When a call stopped at the queue's budget
//! (`flow::tcp::OUT_BUDGET`) with more to send, [`Engine::poll_timeout`] says "now": write
//! the queue out and run another batch with [`Batch::timeout`]. Never run batch after batch
//! without draining the queue in between.

use std::net::SocketAddr;

use crate::engine::Engine;
use crate::flow::tcp::SendRuns;
use crate::flow::udp_runs::DatagramRuns;
use crate::flow::{HostSockets, SockEvent, SockRef};
use crate::time::Instant;
use crate::wire::external::{ExternalPayloads, GuestFrame, NoExternal};
use crate::wire::FrameQueue;

/// One wake-up's worth of inputs to an [`Engine`], all at the same instant, flushed when it
/// ends. `IO` is the driver's host sockets, reachable in between inputs with [`Batch::io`].
#[must_use = "a batch does its work as inputs are fed to it, and flushes when it ends"]
pub struct Batch<'a, IO: HostSockets> {
    engine: &'a mut Engine,
    now: Instant,
    io: &'a mut IO,
    out: &'a mut FrameQueue,
    /// Until `finish` has flushed: then dropping has nothing left to do.
    open: bool,
}

/// What [`Batch::frames`] holds while it runs: guest data of its frames waiting to go out
/// together, TCP segments of a flow in one write, datagrams of a flow in one call.
#[derive(Debug, Default)]
pub(crate) struct FrameRuns<'f> {
    pub(crate) tcp: SendRuns<'f>,
    pub(crate) udp: DatagramRuns<'f>,
}

impl Engine {
    /// Opens a batch of inputs at `now`: socket operations go to `io`, frames for the guest
    /// onto `out` (which the caller writes to the guest once the batch has ended).
    pub fn batch<'a, IO: HostSockets>(
        &'a mut self,
        now: Instant,
        io: &'a mut IO,
        out: &'a mut FrameQueue,
    ) -> Batch<'a, IO> {
        Batch {
            engine: self,
            now,
            io,
            out,
            open: true,
        }
    }
}

impl<IO: HostSockets> Batch<'_, IO> {
    /// The instant the batch's inputs are handled at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves the batch's clock forward to `now` for the inputs that follow (a wake-up that
    /// takes a while, a replayed capture's timestamps); an earlier instant is ignored.
    pub fn advance_to(&mut self, now: Instant) -> &mut Self {
        self.now = self.now.max(now);
        self
    }

    /// One frame from the guest.
    pub fn frame(&mut self, frame: &[u8]) -> &mut Self {
        let frame = GuestFrame::whole(frame);
        self.engine
            .handle_guest_frame(self.now, frame, &NoExternal, None, self.io, self.out);
        self
    }

    /// The frames of one read from the guest link, in order. Consecutive in-order TCP data
    /// of one flow goes to its socket in one write (`StreamSockets::send_vectored`), the
    /// datagrams of one UDP flow in one call (`DgramSockets::udp_send_many`), with the same
    /// outcome as frame by frame; every such write is done when this returns.
    pub fn frames<'f>(&mut self, frames: impl IntoIterator<Item = &'f [u8]>) -> &mut Self {
        self.frames_in_place(frames.into_iter().map(GuestFrame::whole), &NoExternal)
    }

    /// [`Batch::frames`] of frames a link may have split: the TCP payload beyond a frame's
    /// copied head left in the guest's memory, which `external` answers for (see
    /// [`crate::wire::external`]). Nothing refers to that payload once this returns: the
    /// link may give the guest its buffers back then.
    pub fn frames_in_place<'f>(
        &mut self,
        frames: impl IntoIterator<Item = GuestFrame<'f>>,
        external: &dyn ExternalPayloads,
    ) -> &mut Self {
        let mut runs = FrameRuns::default();
        for frame in frames {
            self.engine.handle_guest_frame(
                self.now,
                frame,
                external,
                Some(&mut runs),
                self.io,
                self.out,
            );
        }
        self.engine
            .write_runs(self.now, &mut runs, external, self.io, self.out);
        self
    }

    /// What happened on a host socket the engine opened or was given.
    pub fn socket(&mut self, s: SockRef, ev: SockEvent) -> &mut Self {
        self.engine
            .handle_socket(self.now, s, ev, self.io, self.out);
        self
    }

    /// A connection accepted on a forwarding listener: `s` is the new socket, `peer` the
    /// remote end, `local` the address and port it reached. The engine closes it if the port
    /// isn't forwarded.
    pub fn accept(&mut self, s: SockRef, peer: SocketAddr, local: SocketAddr) -> &mut Self {
        self.engine
            .handle_accept(self.now, s, peer, local, self.io, self.out);
        self
    }

    /// Runs what is due at the batch's instant ([`Engine::poll_timeout`]), if anything.
    pub fn timeout(&mut self) -> &mut Self {
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now, self.io, self.out);
        }
        self
    }

    /// The driver's host sockets, for what it does between inputs (readiness to collect, a
    /// test's virtual peer to move).
    pub fn io(&mut self) -> &mut IO {
        self.io
    }

    /// The frames queued for the guest so far. A driver may write them out and clear the
    /// queue mid-batch (it mustn't wait long with many queued): the flush only adds to it.
    pub fn queue(&mut self) -> &mut FrameQueue {
        self.out
    }

    /// The engine, to look at between inputs.
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// Ends the batch with the flush; the queued frames are then the guest's to get. Returns
    /// when the engine next wants [`Batch::timeout`] ([`Engine::poll_timeout`]).
    pub fn finish(mut self) -> Option<Instant> {
        self.engine.flush(self.now, self.io, self.out);
        self.open = false;
        self.engine.poll_timeout()
    }

    /// Ends this batch (with the flush) and goes on as the next one, for a driver that keeps
    /// the engine, its sockets and the queue borrowed from one wake-up to the next.
    pub fn next_batch(&mut self) -> &mut Self {
        self.engine.flush(self.now, self.io, self.out);
        self
    }
}

impl<IO: HostSockets> Drop for Batch<'_, IO> {
    fn drop(&mut self) {
        // Not while a panic unwinds through the driver: the state may be half-updated.
        if self.open && !std::thread::panicking() {
            self.engine.flush(self.now, self.io, self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::derive::derive;
    use crate::config::host::HostNet;
    use crate::config::resolv::ResolvConf;
    use crate::config::{Mode, NetOptions};
    use crate::flow::NoSockets;

    #[test]
    fn the_clock_only_moves_forward_and_timers_run_when_due() {
        // An offline host: local mode, whose IPv6 gets router advertisements.
        let opts = NetOptions::new(Mode::Pasta);
        let config = derive(&opts, &HostNet::default(), &ResolvConf::default())
            .expect("local mode")
            .config;
        let mut engine = Engine::new(config, 1, Instant::ZERO);
        let due = engine.poll_timeout().expect("an RA is due some time");
        let (mut io, mut out) = (NoSockets, FrameQueue::new());
        let mut batch = engine.batch(due, &mut io, &mut out);
        batch.advance_to(Instant::ZERO);
        assert_eq!(batch.now(), due, "an earlier instant is ignored");
        batch.advance_to(due + Duration::from_secs(1));
        assert_eq!(batch.now(), due + Duration::from_secs(1));
        batch.timeout();
        batch.finish();
        assert_eq!(engine.counters().ra_unsolicited, 1);
        let next = engine.poll_timeout().unwrap();
        engine.batch(due, &mut NoSockets, &mut out).timeout();
        assert_eq!(engine.counters().ra_unsolicited, 1, "not due yet");
        assert_eq!(engine.poll_timeout(), Some(next));
    }
}
