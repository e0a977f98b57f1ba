//! The main loop: guest frames, host socket events and timers into the engine, its answers
//! back to the guest, until a signal (as [`StopSignals`] decides), the end of the spawned
//! command, or the loss of the namespace says stop. Drops worth telling the user about are
//! logged through a [`DropLog`].
//!
//! It knows the guest link only as a [`GuestLink`] (pasta's tap, passt's qemu socket),
//! host sockets as [`Sockets`] (whose epoll tokens it hands back to them: readiness becomes
//! `Batch::socket`, accepted connections `Batch::accept`), and anything else worth waking up
//! for as a [`Watch`]. Each wake-up is one engine [`Batch`], with the `Sockets` as its
//! `HostSockets`: all events go in, the batch ends with the engine's flush, then the frames it
//! produced go to the guest together.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::sys::epoll::EpollEvent;
use os_shim::reactor::{monotonic_now, Reactor};
use os_shim::sockets::{Report, SocketStats, Sockets};
pub use os_shim::tap::ReadFrame;
use os_shim::tokens::{TOKEN_LINK, TOKEN_SIGNAL, TOKEN_TIMER, TOKEN_WATCH_BASE};
use sans_io::engine::{Batch, Engine};
use sans_io::wire::external::{GuestFrame, NoExternal};
use sans_io::wire::lent::PayloadLender;
use sans_io::wire::offload::L4Checksum;
use sans_io::wire::FrameQueue;

use crate::autofwd::AutoForward;
use crate::control::ControlServer;
use crate::drop_log::{self, DropLog};
pub use crate::frame_pool::{CutCounts, FramePool};
use crate::shutdown::StopSignals;

/// Frames read from the guest per wake-up before the answers are flushed: enough to batch,
/// few enough that answers don't wait long.
const READ_BATCH: usize = 64;
/// Largest frame we read: the 65520-byte MTU plus an Ethernet header, rounded up.
pub const MAX_FRAME: usize = 65536 + 64;
/// Frames queued for the guest beyond which they are written out before the wake-up ends,
/// so that a burst of host data doesn't pile up in memory.
const OUT_HIGH_WATER: usize = 256;
/// Watches without a file descriptor are checked this often, and [`Periodic`] work done.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a guest link hands the frames of a read to, all at once, with what answers for the
/// payload a link left in the guest's memory (vhost-user; see `sans_io::wire::external`).
pub use os_shim::vhost_user::OnFrames;

/// Where guest frames come from and go to. Implement either the one-frame methods (a tap
/// device: one frame per system call) or the batch ones (passt's qemu socket: many frames per
/// system call, and clients that come and go); each set has defaults in terms of the other.
pub trait GuestLink {
    fn fd(&self) -> BorrowedFd<'_>;

    /// Reads one frame; `WouldBlock` when there is none.
    fn read_frame(&mut self, _buf: &mut [u8]) -> io::Result<ReadFrame> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Writes one frame.
    fn write_frame(&mut self, _frame: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// How the TCP and UDP frames written to this link may carry their checksums: in full
    /// unless the device finishes them.
    fn l4_checksum(&self) -> L4Checksum {
        L4Checksum::Full
    }

    /// What the link has to say about itself at the end, if anything.
    fn summary(&self) -> Option<String> {
        None
    }

    /// What lends the output queue payload memory (see `sans_io::wire::lent`): a vhost-user
    /// link's receive buffers. Asked once, when the loop starts.
    fn payload_lender(&mut self) -> Option<Box<dyn PayloadLender>> {
        None
    }

    /// Reads what is waiting, about `max` frames at most, and hands them to `on_frames` in
    /// order, as few times as it can (every frame of one read at once: the engine coalesces
    /// what they carry). `pool` holds the frames of links that read one per system call.
    fn read_frames(
        &mut self,
        pool: &mut FramePool,
        max: usize,
        on_frames: &mut OnFrames<'_>,
    ) -> io::Result<LinkStatus> {
        let mut n = 0;
        let mut failed = None;
        pool.begin();
        while n < max.min(pool.slots()) {
            match self.read_frame(pool.slot(n)) {
                Ok(frame) => {
                    pool.took(n, frame);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !pool.is_empty() {
            on_frames(&mut pool.frames().map(GuestFrame::whole), &NoExternal);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(LinkStatus::Open),
        }
    }

    /// Writes the queued frames; returns how many were dropped (refused, or no guest there).
    fn write_frames(&mut self, frames: &FrameQueue) -> usize {
        frames
            .iter()
            .filter(|f| self.write_frame(f).is_err())
            .count()
    }
}

/// What reading from the guest link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// The guest is there (or awaited).
    Open,
    /// The guest went away, with the reason if it wasn't a plain close; the link waits for
    /// the next one, and the loop goes on.
    GuestLeft(Option<String>),
    /// The guest went away and no other will come: the loop ends successfully.
    Finished(Option<String>),
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

/// Work to do every second with the engine and the host sockets (pasta's `auto` port
/// forwarding).
pub trait Periodic {
    fn tick(&mut self, engine: &mut Engine, sockets: &mut Sockets);
}

/// Counters of the loop itself (the engine counts protocol events).
#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub frames_in: u64,
    /// Runs of datagrams read as one frame and cut apart (see [`FramePool`]).
    pub cut: CutCounts,
    pub frames_out: u64,
    /// Answers the guest link refused (full queue, oversize): dropped.
    pub frames_dropped: u64,
}

/// What the loop runs with besides the engine, the guest link and the sockets.
pub struct Extras<'a> {
    pub watches: &'a mut [&'a mut dyn Watch],
    /// pasta's `auto` forwarding, done every second (and told of tables the control socket
    /// changes).
    pub auto: Option<&'a mut AutoForward>,
    /// The control socket (`-c`), if any.
    pub control: Option<&'a mut ControlServer>,
    /// What the reactor's signals do.
    pub stop: &'a mut dyn StopSignals,
}

/// The debug log's line about the host sockets at exit: the runs of datagrams they took whole.
pub fn host_sockets_summary(stats: &SocketStats) -> String {
    let runs = stats.received_runs;
    format!(
        "host sockets: {} runs of datagrams received whole, {} datagrams",
        runs.runs, runs.datagrams
    )
}

/// Runs until something says stop. The reactor's signals go to `extras.stop`; `sockets`
/// (with the forwarding listeners already made) are attached to the reactor here.
pub fn run(
    engine: &mut Engine,
    link: &mut dyn GuestLink,
    reactor: &Reactor,
    sockets: &mut Sockets,
    extras: Extras<'_>,
    stats: &mut LinkStats,
) -> Exit {
    let Extras {
        watches,
        mut auto,
        mut control,
        stop,
    } = extras;
    if let Err(e) = reactor.watch_readable(link.fd(), TOKEN_LINK) {
        return Exit::LinkError(format!("cannot watch the guest link: {e}"));
    }
    if let Err(e) = sockets.attach(reactor) {
        return Exit::LinkError(format!("cannot watch host sockets: {e}"));
    }
    if let Some(control) = control.as_deref_mut() {
        if let Err(e) = control.attach(reactor) {
            return Exit::LinkError(format!("cannot watch the configuration socket: {e}"));
        }
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
    let mut pool = FramePool::new(READ_BATCH);
    let mut out = FrameQueue::new();
    out.set_payload_lender(link.payload_lender());
    let mut events = [EpollEvent::empty(); 64];
    let mut next_poll = monotonic_now() + WATCH_INTERVAL;
    let mut drops = DropLog::for_kinds(drop_log::KINDS, engine, sockets);
    let mut room_made = DropLog::for_kinds(drop_log::ROOM_MADE, engine, sockets);

    loop {
        // The engine's next deadline, a listener's that ran out of descriptors, the end of a
        // shutdown's grace period, drops held back from the log, a control client's time.
        let deadline = [
            engine.poll_timeout(),
            sockets.poll_timeout(),
            stop.deadline(),
            drops.deadline(),
            control.as_ref().and_then(|c| c.deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Err(e) = reactor.set_deadline(deadline) {
            return Exit::LinkError(format!("cannot arm the timer: {e}"));
        }
        let timeout = (!polled.is_empty() || auto.is_some()).then(|| {
            let left = next_poll.saturating_since(monotonic_now());
            left.as_millis().min(u128::from(u16::MAX)) as u16
        });
        // Reports the sockets queued after the last batch are this one's: no waiting.
        let timeout = if sockets.has_reports() {
            Some(0)
        } else {
            timeout
        };
        let n = match reactor.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => return Exit::LinkError(format!("epoll: {e}")),
        };
        // What the link takes may change with its guest (a vhost-user front-end negotiates).
        out.set_l4_checksum(link.l4_checksum());
        let mut batch = engine.batch(monotonic_now(), sockets, &mut out);
        dispatch_reports(&mut batch);
        for ev in &events[..n] {
            batch.advance_to(monotonic_now());
            match ev.data() {
                TOKEN_LINK => match read_batch(&mut batch, link, &mut pool, stats) {
                    Ok(LinkStatus::Open) => {}
                    Ok(LinkStatus::GuestLeft(why)) => {
                        log_departure(why.as_deref());
                        log::info!("waiting for the next guest to connect");
                        // Nobody to send them to.
                        let out = batch.queue();
                        stats.frames_dropped += out.len() as u64;
                        out.clear();
                    }
                    Ok(LinkStatus::Finished(why)) => {
                        log_departure(why.as_deref());
                        return Exit::Done(0);
                    }
                    Err(e) => return Exit::LinkError(e.to_string()),
                },
                TOKEN_TIMER => {
                    reactor.ack_timer();
                    let now = batch.now();
                    batch.io().handle_timeout(now);
                    batch.timeout();
                }
                TOKEN_SIGNAL => {
                    while let Ok(Some(sig)) = reactor.next_signal() {
                        if let Some(exit) = stop.on_signal(sig, monotonic_now()) {
                            batch.finish();
                            flush(link, &mut out, stats);
                            return exit;
                        }
                    }
                }
                token if Sockets::owns_token(token) => batch.io().ready(token, ev.events()),
                token if ControlServer::owns_token(token) => {
                    // Tables change between batches: the engine's lookups see one table.
                    batch.finish();
                    if let Some(control) = control.as_deref_mut() {
                        control.ready(token, monotonic_now(), engine, sockets, auto.as_deref_mut());
                    }
                    batch = engine.batch(monotonic_now(), sockets, &mut out);
                }
                token => {
                    let i = (token - TOKEN_WATCH_BASE) as usize;
                    if let Some(status) = watches.get_mut(i).and_then(|w| w.check()) {
                        batch.finish();
                        flush(link, &mut out, stats);
                        return Exit::Done(status);
                    }
                }
            }
            // What the sockets had to say, in order.
            dispatch_reports(&mut batch);
            // A long wake-up's frames go out before it ends (the batch's flush only adds to
            // them), so that a burst of host data doesn't pile up in memory.
            if batch.queue().len() >= OUT_HIGH_WATER {
                flush(link, batch.queue(), stats);
            }
        }
        // The batch ends with its flush: ACKs and window updates, data for windows just
        // opened. Reports its socket calls queue (interest turned back on where input waits)
        // and what the sockets find to report again afterwards go to the next batch, at once.
        batch.finish();
        flush(link, &mut out, stats);
        sockets.after_batch();
        let now = monotonic_now();
        if let Some(control) = control.as_deref_mut() {
            control.check_deadline(now);
        }
        for line in drops.observe(now, &drop_log::sample(drop_log::KINDS, engine, sockets)) {
            log::warn!("{line}");
        }
        let made = drop_log::sample(drop_log::ROOM_MADE, engine, sockets);
        for line in room_made.observe(now, &made) {
            log::debug!("{line}");
        }
        if stop.deadline().is_some_and(|d| d <= now) {
            if let Some(exit) = stop.on_deadline(now) {
                return exit;
            }
        }
        if monotonic_now() >= next_poll {
            next_poll = monotonic_now() + WATCH_INTERVAL;
            for &i in &polled {
                if let Some(status) = watches[i].check() {
                    return Exit::Done(status);
                }
            }
            if let Some(auto) = auto.as_deref_mut() {
                auto.tick(engine, sockets);
            }
        }
    }
}

/// Hands queued socket reports to the batch until none are left.
fn dispatch_reports(batch: &mut Batch<'_, Sockets>) {
    while let Some(report) = batch.io().next_report() {
        match report {
            Report::Event(s, ev) => batch.socket(s, ev),
            Report::Accepted { sock, peer, local } => batch.accept(sock, peer, local),
        };
    }
}

/// One read from the guest link into the batch, its frames at once.
fn read_batch(
    batch: &mut Batch<'_, Sockets>,
    link: &mut dyn GuestLink,
    pool: &mut FramePool,
    stats: &mut LinkStats,
) -> io::Result<LinkStatus> {
    let status = link.read_frames(pool, READ_BATCH, &mut |frames, external| {
        batch.frames_in_place(frames.inspect(|_| stats.frames_in += 1), external);
    });
    stats.cut += pool.take_counts();
    status
}

fn log_departure(why: Option<&str>) {
    match why {
        None => log::info!("the guest disconnected"),
        Some(why) => log::warn!("the guest's connection ended: {why}"),
    }
}

/// Hands the queued frames to the guest link (also when there are none: a link may have the
/// end of a partly written frame to finish).
fn flush(link: &mut dyn GuestLink, out: &mut FrameQueue, stats: &mut LinkStats) {
    let dropped = link.write_frames(out).min(out.len());
    stats.frames_out += (out.len() - dropped) as u64;
    stats.frames_dropped += dropped as u64;
    out.clear();
}
