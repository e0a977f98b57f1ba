//! The main loop: guest frames, host socket events and timers into the engine, its answers
//! back to the guest, until a signal, the end of the spawned command, or the loss of the
//! namespace says stop.
//!
//! It knows the guest link only as a [`GuestLink`] (pasta's tap, later passt's qemu socket),
//! host sockets as [`Sockets`] (whose epoll tokens it hands back to them: readiness becomes
//! `Engine::handle_socket`, accepted connections `Engine::handle_accept`), and anything else
//! worth waking up for as a [`Watch`]. Every engine call gets the same `Sockets` as its
//! `HostSockets`. Per wake-up: all events are handled, then the engine flushes, then the
//! frames it produced go to the guest in one batch.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::sys::epoll::EpollEvent;
use os_shim::reactor::{monotonic_now, Reactor, TOKEN_SIGNAL, TOKEN_TIMER};
use os_shim::sockets::{Report, Sockets};
use sans_io::engine::Engine;
use sans_io::wire::FrameQueue;

/// Frames read from the guest per wake-up before the answers are flushed: enough to batch,
/// few enough that answers don't wait long.
const READ_BATCH: usize = 64;
/// Largest frame we read: the 65520-byte MTU plus an Ethernet header, rounded up.
pub const MAX_FRAME: usize = 65536 + 64;
/// Frames queued for the guest beyond which they are written out before the wake-up ends,
/// so that a burst of host data doesn't pile up in memory.
const OUT_HIGH_WATER: usize = 256;
/// Flush rounds per wake-up, see the loop.
const FLUSH_ROUNDS: usize = 4;
/// Watches without a file descriptor are checked this often.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

const TOKEN_LINK: u64 = 0;
const TOKEN_WATCH_BASE: u64 = 16;

/// Where guest frames come from and go to.
pub trait GuestLink {
    fn fd(&self) -> BorrowedFd<'_>;
    /// Reads one frame; `WouldBlock` when there is none.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The frames of a wake-up have been written (a `--pcap` capture writes its buffer here).
    fn end_batch(&mut self) {}
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A terminating signal arrived.
    Signal(i32),
    /// Something we watch says we're done, with the exit status to use.
    Done(i32),
    /// The guest link failed.
    LinkError(String),
}

/// Something the loop should react to besides the guest link: the spawned command, the
/// namespace file.
pub trait Watch {
    /// A descriptor that becomes readable when [`Watch::check`] may have news; `None` to be
    /// checked every second instead.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    /// Looks whether it's time to stop, and with which status.
    fn check(&mut self) -> Option<i32>;
}

/// Counters of the loop itself (the engine counts protocol events).
#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub frames_in: u64,
    pub frames_out: u64,
    /// Answers the guest link refused (full queue, oversize): dropped.
    pub frames_dropped: u64,
}

/// Runs until something says stop. `signals` must be the ones the reactor was built with;
/// `sockets` (with the forwarding listeners already made) are attached to it here.
pub fn run(
    engine: &mut Engine,
    link: &mut dyn GuestLink,
    reactor: &Reactor,
    sockets: &mut Sockets,
    watches: &mut [&mut dyn Watch],
    stats: &mut LinkStats,
) -> Exit {
    if let Err(e) = reactor.watch_readable(link.fd(), TOKEN_LINK) {
        return Exit::LinkError(format!("cannot watch the guest link: {e}"));
    }
    if let Err(e) = sockets.attach(reactor) {
        return Exit::LinkError(format!("cannot watch host sockets: {e}"));
    }
    for (i, w) in watches.iter().enumerate() {
        if let Some(fd) = w.fd() {
            if let Err(e) = reactor.watch_readable(fd, TOKEN_WATCH_BASE + i as u64) {
                return Exit::LinkError(format!("cannot watch: {e}"));
            }
        }
    }
    let polled: Vec<usize> = watches
        .iter()
        .enumerate()
        .filter(|(_, w)| w.fd().is_none())
        .map(|(i, _)| i)
        .collect();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut out = FrameQueue::new();
    let mut events = [EpollEvent::empty(); 64];
    let mut next_poll = monotonic_now() + WATCH_INTERVAL;

    loop {
        // The engine's next deadline, or a listener's that ran out of descriptors.
        let deadline = [engine.poll_timeout(), sockets.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Err(e) = reactor.set_deadline(deadline) {
            return Exit::LinkError(format!("cannot arm the timer: {e}"));
        }
        let timeout = (!polled.is_empty()).then(|| {
            let left = next_poll.saturating_since(monotonic_now());
            left.as_millis().min(u128::from(u16::MAX)) as u16
        });
        let n = match reactor.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => return Exit::LinkError(format!("epoll: {e}")),
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_LINK => {
                    if let Err(e) = read_batch(engine, link, sockets, &mut buf, &mut out, stats) {
                        return Exit::LinkError(e.to_string());
                    }
                }
                TOKEN_TIMER => {
                    reactor.ack_timer();
                    let now = monotonic_now();
                    sockets.handle_timeout(now);
                    engine.handle_timeout(now, sockets, &mut out);
                }
                TOKEN_SIGNAL => {
                    if let Ok(Some(sig)) = reactor.next_signal() {
                        return Exit::Signal(sig);
                    }
                }
                token if Sockets::owns_token(token) => sockets.ready(token, ev.events()),
                token => {
                    let i = (token - TOKEN_WATCH_BASE) as usize;
                    if let Some(status) = watches.get_mut(i).and_then(|w| w.check()) {
                        flush(link, &mut out, stats);
                        return Exit::Done(status);
                    }
                }
            }
            // What the sockets had to say, and what the engine's calls just queued (a peek
            // meeting the end of a stream), in order.
            dispatch_reports(engine, sockets, &mut out);
            if out.len() >= OUT_HIGH_WATER {
                flush(link, &mut out, stats);
            }
        }
        // What the batch left due: ACKs and window updates, data for windows just opened;
        // again if that made the sockets report something (a peek meeting the end of a
        // stream), a few times at most (the engine's timer catches up with anything left).
        for _ in 0..FLUSH_ROUNDS {
            engine.flush(monotonic_now(), sockets, &mut out);
            if !dispatch_reports(engine, sockets, &mut out) {
                break;
            }
        }
        flush(link, &mut out, stats);
        if !polled.is_empty() && monotonic_now() >= next_poll {
            next_poll = monotonic_now() + WATCH_INTERVAL;
            for &i in &polled {
                if let Some(status) = watches[i].check() {
                    return Exit::Done(status);
                }
            }
        }
    }
}

/// Hands queued socket reports to the engine until none are left; returns whether there
/// were any.
fn dispatch_reports(engine: &mut Engine, sockets: &mut Sockets, out: &mut FrameQueue) -> bool {
    let mut any = false;
    while let Some(report) = sockets.next_report() {
        any = true;
        let now = monotonic_now();
        match report {
            Report::Event(s, ev) => engine.handle_socket(now, s, ev, sockets, out),
            Report::Accepted { sock, peer, local } => {
                engine.handle_accept(now, sock, peer, local, sockets, out)
            }
        }
    }
    any
}

fn read_batch(
    engine: &mut Engine,
    link: &mut dyn GuestLink,
    sockets: &mut Sockets,
    buf: &mut [u8],
    out: &mut FrameQueue,
    stats: &mut LinkStats,
) -> io::Result<()> {
    for _ in 0..READ_BATCH {
        match link.read_frame(buf) {
            Ok(len) => {
                stats.frames_in += 1;
                engine.handle_frame(monotonic_now(), &buf[..len], sockets, out);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn flush(link: &mut dyn GuestLink, out: &mut FrameQueue, stats: &mut LinkStats) {
    for frame in out.iter() {
        match link.write_frame(frame) {
            Ok(()) => stats.frames_out += 1,
            Err(_) => stats.frames_dropped += 1,
        }
    }
    out.clear();
    link.end_batch();
}
