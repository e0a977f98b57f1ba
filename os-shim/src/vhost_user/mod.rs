//! passt's vhost-user guest link (`--vhost-user`): qemu connects to our UNIX domain socket,
//! speaks the vhost-user protocol on it (decoded by the `vhost` crate, see [`device`]), and
//! shares the guest's memory with us; frames then move through the guest's virtqueues in that
//! memory ([`virtq`]), with eventfds for notifications instead of a socket write per frame.
//!
//! Single-threaded, like the rest: the listener, the protocol connection and the two kick
//! eventfds sit in an epoll instance of our own whose descriptor ([`VhostUserLink::fd`]) the
//! main loop watches, as it does the qemu stream socket's. One front-end at a time; a second
//! is accepted and closed at once. When it leaves, the device state goes with it and the next
//! front-end (qemu restarted) starts from scratch; one-off, passt ends instead.
//!
//! Frames the receive queue has no buffers for wait in a bounded backlog until the guest adds
//! some (it kicks the receive queue then): the engine hands us TCP data as its window allows,
//! and dropping it for a momentarily full ring would cost a retransmission timeout.
//!
//! Host TCP data goes into the guest without a copy of ours: the link lends the engine's
//! output queue the receive queue's buffers ([`VhostUserLink::payload_lender`], [`lend`]),
//! the kernel peeks the payload straight into them, and [`VhostUserLink::write_frames`]
//! publishes those frames, in queue order with the copied ones, by writing their headers in
//! front. Nothing is lent while frames wait in the backlog, nor to a guest that wants its
//! checksums finished (that would mean reading the payload back).
//!
//! The guest's TCP payload leaves the same way: each transmit frame's head (its headers) is
//! copied, the rest left in the guest's memory ([`tx_split`]) and lent for the read
//! (`crate::tx_loans`) so that the host socket's `sendmsg` takes it from there; the chains go
//! back to the guest once the engine's batch is over.

pub mod device;
pub mod driver_model;
pub mod fuzzing;
pub mod lend;
pub mod tx_split;
pub mod virtq;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self as sock, SockFlag};
use sans_io::wire::external::{ExternalPayloads, GuestFrame};
use sans_io::wire::gso::{self, Run};
use sans_io::wire::lent::{LentArea, LentPayload, PayloadLender};
use sans_io::wire::offload::{
    finish_partial_checksum, partial_checksum_at, ChecksumAt, L4Checksum,
};
use sans_io::wire::FrameQueue;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::qemu_socket::{ReadStatus, WriteReport, MAX_FRAME};
use crate::run_cutter::{CutCounts, RunCutter};
use crate::vnet_hdr::{Gso, VnetHeader};
use device::{Device, RX, TX};
use lend::{lent_header, GuestOffloads, RxLend, KEEP_ON_RING};
use tx_split::{guest_frame, take_tx_frame, TxRests, TxTail};
use virtq::{ChainError, RxOutcome, RxScratch};

/// What takes the frames of one read from the transmit queue: the frames, and what answers
/// for the payload they left in the guest's memory.
pub type OnFrames<'a> =
    dyn FnMut(&mut dyn Iterator<Item = GuestFrame<'_>>, &dyn ExternalPayloads) + 'a;

/// Our epoll instance's tokens.
const LISTENER: u64 = 1;
const CONNECTION: u64 = 2;
const KICK_BASE: u64 = 3; // + queue index
/// Wake-ups in a row `read_frames` may serve on the transmit kick alone before it asks our
/// epoll what else waits.
const KICK_ONLY_WAKEUPS: u32 = 16;

/// Transmit frames handed to the engine per read at most (more wait for the next wake-up).
pub const TX_BATCH: usize = 64;
/// Protocol messages handled per wake-up at most, so that a chatty front-end can't starve
/// the data path.
const MESSAGES_PER_WAKEUP: usize = 64;
/// How long a protocol message may take to arrive whole once it has started: the connection
/// blocks (the `vhost` crate reads a message in parts), so a stalled front-end must not hang us.
const MESSAGE_TIMEOUT_SECS: libc::time_t = 1;
/// Frames and bytes waiting for receive buffers at most; beyond, frames are dropped.
const BACKLOG_FRAMES: usize = 4096;
const BACKLOG_BYTES: usize = 16 << 20;

/// Counters over the link's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhostStats {
    pub frontends: u64,
    pub refused: u64,
    pub messages: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    /// Chains the guest gave us that we couldn't use (out of its memory, too short...).
    pub bad_chains: u64,
    /// Frames that waited in the backlog for receive buffers.
    pub backlogged: u64,
    /// Frames whose checksum the guest finished (GUEST_CSUM).
    pub checksums_left: u64,
    /// Frames, and their payload bytes, the kernel peeked straight into the guest's buffers.
    pub zero_copy_frames: u64,
    pub zero_copy_bytes: u64,
    /// Of those frames, the ones that carried several TCP segments (GUEST_TSO4/6).
    pub large_segments_out: u64,
    /// Times the guest's buffers had no room for a lent frame, and the frames were copied.
    pub lend_no_room: u64,
    /// Runs of copied frames (a flow's datagrams, GUEST_USO4/6; TCP segments, GUEST_TSO4/6)
    /// placed as one frame each, and the frames they carried.
    pub runs_out: u64,
    pub run_frames_out: u64,
    /// Frames from the guest, and their payload bytes, sent from its own memory (the TCP
    /// payload past the headers we copy).
    pub tx_in_place_frames: u64,
    pub tx_in_place_bytes: u64,
    /// Frames from the guest it left to the device to segment (HOST_TSO4/6): TCP segments
    /// larger than its MTU.
    pub tx_segmented_frames: u64,
    /// Runs of datagrams from the guest (HOST_USO), cut into the datagrams the engine takes;
    /// frames that said they were runs and didn't cut were dropped.
    pub tx_udp_runs: CutCounts,
    /// Wake-ups served on the transmit kick alone, without asking our epoll what else waits.
    pub kick_only_wakeups: u64,
}

/// The connected front-end and what it configured.
struct Frontend {
    handler: BackendReqHandler<Mutex<Device>>,
    device: Arc<Mutex<Device>>,
    /// Per queue, the kick eventfd we watch: a duplicate of the device's, with the device's
    /// generation it was made from. Ours, so that we can always take it out of our epoll
    /// before closing it: epoll forgets a descriptor only once its file is closed everywhere,
    /// and qemu keeps its end open and sends the same eventfd again after a ring reset.
    kick_watch: [Option<(u64, OwnedFd)>; 2],
    /// Messages from this front-end: one that sent none (a probe) doesn't use up `--one-off`.
    messages: u64,
    /// The protocol connection's descriptor (the handler owns it), to poll for more messages.
    connection: RawFd,
}

/// See the module documentation.
pub struct VhostUserLink {
    epoll: Epoll,
    listener: Option<OwnedFd>,
    frontend: Option<Frontend>,
    one_off: bool,
    rx_scratch: RxScratch,
    /// Transmit frames of one read: slot `i` is `tx_buf[i * MAX_FRAME..]`, `tx_lens[i]` long.
    tx_buf: Vec<u8>,
    tx_lens: Vec<usize>,
    /// Per slot, the segment size of a run of datagrams it holds (HOST_USO), and the
    /// datagrams cut out of those.
    tx_udp_runs: Vec<Option<u16>>,
    tx_cutter: RunCutter,
    /// Where each frame's rest lies in the guest's memory (empty for a frame copied whole).
    tx_tails: Vec<TxTail>,
    /// The chains of the frames read, to give back once the engine is done with them.
    tx_heads: Vec<u16>,
    /// The transmit queue had more than one read's worth: look again on the next wake-up.
    tx_more: bool,
    /// Wake-ups in a row served on the transmit kick alone (see `read_frames`).
    kick_only_wakeups: u32,
    /// Frames for the guest waiting for receive buffers; `backlog_next` is the first unsent.
    backlog: FrameQueue,
    /// A frame whose checksum we finish, for a guest that can't (see `checksum_for`).
    finished: Vec<u8>,
    backlog_next: usize,
    /// The receive buffers lent to the engine's output queue, shared with the lender handle
    /// that queue holds.
    lend: Rc<RefCell<Lending>>,
    /// The lender's refused chains already counted in `stats.bad_chains`.
    lend_bad_chains_seen: u64,
    stats: VhostStats,
}

/// What the link and its lender handle share.
#[derive(Default)]
struct Lending {
    lend: RxLend,
    /// The front-end's device, while there is one.
    device: Option<Arc<Mutex<Device>>>,
    /// Frames wait for buffers: nothing is lent until they are placed (they go first).
    backlog_waiting: bool,
}

/// The [`PayloadLender`] an output queue holds: the receive queue's buffers, while the
/// front-end has the rings running, takes mergeable buffers and unfinished checksums, and no
/// frame waits.
struct RxLender(Rc<RefCell<Lending>>);

impl PayloadLender for RxLender {
    fn reserve(&mut self, header_room: usize, lens: &[usize], areas: &mut Vec<LentArea>) -> usize {
        let mut shared = self.0.borrow_mut();
        let shared = &mut *shared;
        if shared.backlog_waiting {
            shared.lend.stats.no_room += 1;
            return 0;
        }
        let Some(device) = shared.device.clone() else {
            return 0;
        };
        let mut guard = lock(&device);
        // A lent segment spans buffers, and its payload is never read for a checksum.
        if !guard.ready(RX) || !guard.guest_csum() || !guard.mergeable_rx_buffers() {
            return 0;
        }
        let dev = &mut *guard;
        shared.lend.sync_epoch(dev.epoch);
        let Some(mem) = dev.mem.as_ref() else {
            return 0;
        };
        let queue = &mut dev.queues[RX].queue;
        shared
            .lend
            .reserve(queue, mem, KEEP_ON_RING, header_room, lens, areas)
    }

    fn large_tcp_segments(&self, ipv6: bool) -> bool {
        let shared = self.0.borrow();
        // Lent frames need mergeable buffers (see `reserve`); large ones span many.
        shared.device.as_ref().is_some_and(|device| {
            let dev = lock(device);
            dev.mergeable_rx_buffers() && dev.guest_tso(ipv6)
        })
    }

    fn fill(&mut self, at: usize, data: &[u8]) {
        self.0.borrow_mut().lend.fill(at, data);
    }

    fn settle(&mut self, filled: &[usize]) -> u64 {
        self.0.borrow_mut().lend.settle(filled)
    }
}

fn lock(device: &Mutex<Device>) -> MutexGuard<'_, Device> {
    // Single-threaded: a poisoned lock can only come from a panic we already died of.
    device.lock().unwrap_or_else(|e| e.into_inner())
}

impl VhostUserLink {
    /// Serves front-ends connecting to `listener` (from `qemu_socket::bind_listener`), one at
    /// a time; with `one_off`, only the first.
    pub fn listen(listener: OwnedFd, one_off: bool) -> io::Result<VhostUserLink> {
        let link = VhostUserLink::new(one_off)?;
        link.epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        Ok(VhostUserLink {
            listener: Some(listener),
            ..link
        })
    }

    /// Serves the already connected socket `fd` (`--fd`), and no other front-end.
    pub fn connected(fd: OwnedFd) -> io::Result<VhostUserLink> {
        let mut link = VhostUserLink::new(true)?;
        link.adopt(fd)?;
        Ok(link)
    }

    fn new(one_off: bool) -> io::Result<VhostUserLink> {
        Ok(VhostUserLink {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            listener: None,
            frontend: None,
            one_off,
            rx_scratch: RxScratch::new(u16::MAX / 2 + 1),
            tx_buf: vec![0; TX_BATCH * MAX_FRAME],
            tx_lens: vec![0; TX_BATCH],
            tx_udp_runs: vec![None; TX_BATCH],
            tx_cutter: RunCutter::new(),
            tx_tails: (0..TX_BATCH).map(|_| TxTail::new()).collect(),
            tx_heads: Vec::with_capacity(TX_BATCH),
            tx_more: false,
            kick_only_wakeups: 0,
            backlog: FrameQueue::new(),
            finished: Vec::new(),
            backlog_next: 0,
            lend: Rc::default(),
            lend_bad_chains_seen: 0,
            stats: VhostStats::default(),
        })
    }

    /// Readable when a front-end connects, sends a message, or kicks a queue.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// How frames to the guest may carry their TCP and UDP checksums: left to finish once the
    /// front-end has negotiated GUEST_CSUM.
    pub fn l4_checksum(&self) -> L4Checksum {
        match &self.frontend {
            Some(fe) if lock(&fe.device).guest_csum() => L4Checksum::Partial,
            _ => L4Checksum::Full,
        }
    }

    pub fn stats(&self) -> &VhostStats {
        &self.stats
    }

    /// What an output queue borrows the receive queue's buffers through, for as long as
    /// this link lives (see the module documentation).
    pub fn payload_lender(&self) -> Box<dyn PayloadLender> {
        Box::new(RxLender(self.lend.clone()))
    }

    pub fn has_frontend(&self) -> bool {
        self.frontend.is_some()
    }

    fn adopt(&mut self, fd: OwnedFd) -> io::Result<()> {
        // Blocking, with a bound: the protocol crate reads a message header and body apart.
        set_blocking_with_timeout(fd.as_raw_fd())?;
        self.epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, CONNECTION))?;
        let connection = fd.as_raw_fd();
        let stream = UnixStream::from(fd);
        let device = Arc::new(Mutex::new(Device::new()));
        {
            let mut lending = self.lend.borrow_mut();
            lending.lend.forget();
            lending.device = Some(device.clone());
        }
        self.frontend = Some(Frontend {
            handler: BackendReqHandler::from_stream(stream, device.clone()),
            device,
            kick_watch: [None, None],
            messages: 0,
            connection,
        });
        self.stats.frontends += 1;
        self.clear_backlog();
        self.tx_more = false;
        Ok(())
    }

    /// Handles what is waiting: protocol messages, new connections, kicks; the transmit
    /// queue's frames (up to [`TX_BATCH`]) go to `on_frames` together.
    pub fn read_frames(&mut self, on_frames: &mut OnFrames<'_>) -> io::Result<ReadStatus> {
        // The transmit kick first, read without asking our epoll which descriptor has news: a
        // guest sending is the common reason for a wake-up. Anything else waiting keeps our
        // epoll readable, so the loop comes back at once to look; that look is not put off
        // while frames wait for receive buffers (the receive kick frees them), nor for more
        // than `KICK_ONLY_WAKEUPS` wake-ups in a row (protocol messages wait for an answer).
        let backlogged = self.backlog.len() > self.backlog_next;
        if !backlogged && self.kick_only_wakeups < KICK_ONLY_WAKEUPS && self.take_kick(TX) {
            self.kick_only_wakeups += 1;
            self.stats.kick_only_wakeups += 1;
            self.read_tx(on_frames);
            return Ok(ReadStatus::Open);
        }
        self.kick_only_wakeups = 0;
        let mut events = [EpollEvent::empty(); 8];
        let n = loop {
            match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let (mut listener, mut connection, mut kicks) = (false, false, [false; 2]);
        for ev in &events[..n] {
            match ev.data() {
                LISTENER => listener = true,
                CONNECTION => connection = true,
                k => {
                    if let Some(kick) = kicks.get_mut((k - KICK_BASE) as usize) {
                        *kick = true;
                    }
                }
            }
        }
        let mut status = ReadStatus::Open;
        if connection {
            status = self.handle_messages();
        }
        if self.frontend.is_some() {
            if kicks[RX] {
                self.take_kick(RX);
                self.write_frames(&FrameQueue::new());
            }
            if kicks[TX] || self.tx_more {
                if kicks[TX] {
                    self.take_kick(TX);
                }
                self.read_tx(on_frames);
            }
        }
        if listener && !matches!(status, ReadStatus::Finished(_)) {
            self.accept_all();
        }
        Ok(status)
    }

    /// Protocol messages until none is waiting (or a wake-up's worth).
    fn handle_messages(&mut self) -> ReadStatus {
        for _ in 0..MESSAGES_PER_WAKEUP {
            let Some(fe) = self.frontend.as_mut() else {
                return ReadStatus::Open;
            };
            let early = match early_vring_enable(fe) {
                Ok(handled) => handled,
                Err(e) => return self.drop_frontend(Some(format!("vhost-user protocol: {e}"))),
            };
            let result = if early {
                Ok(())
            } else {
                fe.handler.handle_request()
            };
            match result {
                Ok(()) => {}
                // The message was read whole and refused (NACKed where the front-end asked
                // for a reply): the conversation goes on.
                Err(
                    e @ (VuError::InvalidParam
                    | VuError::InvalidOperation(_)
                    | VuError::InactiveFeature(_)
                    | VuError::InactiveOperation(_)
                    | VuError::FeatureMismatch
                    | VuError::ReqHandlerError(_)),
                ) => log::debug!("vhost-user: request refused: {e}"),
                Err(VuError::Disconnected) => return self.drop_frontend(None),
                Err(e) => {
                    return self.drop_frontend(Some(format!("vhost-user protocol: {e}")));
                }
            }
            fe.messages += 1;
            self.stats.messages += 1;
            if let Err(e) = self.sync_kicks() {
                return self.drop_frontend(Some(format!("cannot watch a kick eventfd: {e}")));
            }
            if !self.connection_readable() {
                break;
            }
        }
        ReadStatus::Open
    }

    fn connection_readable(&self) -> bool {
        let Some(fe) = &self.frontend else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: fe.connection,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd of ours, no waiting.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0
    }

    /// Watches the kick eventfds the front-end last gave us (see `Frontend::kick_watch`).
    fn sync_kicks(&mut self) -> io::Result<()> {
        let Some(fe) = self.frontend.as_mut() else {
            return Ok(());
        };
        let dev = lock(&fe.device);
        for (i, q) in dev.queues.iter().enumerate() {
            let generation = q.kick.as_ref().map(|_| q.kick_generation);
            if fe.kick_watch[i].as_ref().map(|w| w.0) == generation {
                continue;
            }
            if let Some((_, old)) = fe.kick_watch[i].take() {
                let _ = self.epoll.delete(&old);
            }
            if let (Some(file), Some(generation)) = (&q.kick, generation) {
                let watch = file.as_fd().try_clone_to_owned()?;
                set_nonblocking(watch.as_raw_fd())?;
                self.epoll.add(
                    &watch,
                    EpollEvent::new(EpollFlags::EPOLLIN, KICK_BASE + i as u64),
                )?;
                fe.kick_watch[i] = Some((generation, watch));
            }
        }
        Ok(())
    }

    /// Reads queue `queue`'s kick eventfd: whether the guest (or our own `self_kick`) kicked.
    fn take_kick(&self, queue: usize) -> bool {
        let Some((_, kick)) = self
            .frontend
            .as_ref()
            .and_then(|fe| fe.kick_watch[queue].as_ref())
        else {
            return false;
        };
        let mut count = 0u64;
        // SAFETY: an 8-byte read into a local from a non-blocking eventfd.
        let n = unsafe { libc::read(kick.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        n == 8
    }

    /// Takes up to [`TX_BATCH`] frames off the transmit queue and hands them over: a TCP
    /// segment's payload beyond the first [`TX_HEAD`] bytes stays in the guest's memory (see
    /// [`tx_split`]), the rest is copied. The chains go back to the guest (used ring) only
    /// once `on_frames` has returned, in order: by then the engine has written what they hold.
    fn read_tx(&mut self, on_frames: &mut OnFrames<'_>) {
        self.tx_more = false;
        let Some(device) = self.frontend.as_ref().map(|fe| fe.device.clone()) else {
            return;
        };
        let mut n = 0;
        let mem = {
            let mut guard = lock(&device);
            if !guard.ready(TX) {
                return;
            }
            let dev = &mut *guard;
            let Some(mem) = dev.mem.clone() else {
                return;
            };
            let vq = &mut dev.queues[TX];
            self.tx_heads.clear();
            while n < TX_BATCH {
                let Some(chain) = vq.queue.pop_descriptor_chain(&*mem) else {
                    break;
                };
                self.tx_heads.push(chain.head_index());
                match self.take_tx_frame(&mem, chain, n) {
                    Ok(()) => n += 1,
                    Err(e) => self.bad_chain(e),
                }
            }
            // All taken: ask for a kick at the next frame (with event indices, the guest
            // kicks only past where we say we are); some came meanwhile: look again.
            self.tx_more = n == TX_BATCH || vq.queue.enable_notification(&*mem).unwrap_or(true);
            mem
        };
        if self.tx_more {
            // Our own kick, so that the main loop comes back for the rest.
            self.self_kick();
        }
        self.stats.frames_in += n as u64;
        if n > 0 {
            let tails = &self.tx_tails[..n];
            // SAFETY: the areas were checked against `mem`, which we hold (and with it the
            // mapping) until the loans end below.
            unsafe { crate::tx_loans::lend(tails.iter().map(TxTail::areas)) };
            let rests = TxRests { mem: &*mem, tails };
            // Runs of datagrams (HOST_USO) are cut into the datagrams they carry, which go
            // in their place; a frame is otherwise what the chain held.
            let (buf, lens, runs) = (&self.tx_buf, &self.tx_lens, &self.tx_udp_runs);
            let cutter = &mut self.tx_cutter;
            cutter.clear();
            // Per frame, the datagrams cut out of it (first, end), if it was a run.
            let mut cut: [Option<(usize, usize)>; TX_BATCH] = [None; TX_BATCH];
            for i in 0..n {
                if let Some(size) = runs[i] {
                    let frame = &buf[i * MAX_FRAME..i * MAX_FRAME + lens[i]];
                    let datagrams = cutter.cut(frame, size).unwrap_or(0..0);
                    cut[i] = Some((datagrams.start, datagrams.end));
                }
            }
            let cutter = &*cutter;
            on_frames(
                &mut (0..n).flat_map(|i| {
                    let whole = cut[i].is_none().then(|| {
                        guest_frame(i, &buf[i * MAX_FRAME..i * MAX_FRAME + lens[i]], &tails[i])
                    });
                    let datagrams = cut[i]
                        .into_iter()
                        .flat_map(|(first, end)| first..end)
                        .map(|d| GuestFrame::whole(cutter.frame(d)));
                    whole.into_iter().chain(datagrams)
                }),
                &rests,
            );
            self.stats.tx_udp_runs += self.tx_cutter.take_counts();
            crate::tx_loans::end();
        }
        self.return_tx_chains(&device, &mem);
    }

    /// Frame `n` of a read from `chain`, into its slot (see [`tx_split::take_tx_frame`]).
    fn take_tx_frame(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        n: usize,
    ) -> Result<(), ChainError> {
        let slot = &mut self.tx_buf[n * MAX_FRAME..(n + 1) * MAX_FRAME];
        let gso = chain
            .clone()
            .next()
            .map_or(Gso::None, |first| virtq::tx_gso(mem, &first));
        self.tx_udp_runs[n] = match gso {
            Gso::UdpRun(size) => Some(size),
            Gso::Other => {
                self.stats.tx_segmented_frames += 1;
                None
            }
            Gso::None => None,
        };
        let split = take_tx_frame(mem, chain, slot, &mut self.tx_tails[n])?;
        self.tx_lens[n] = split.head;
        if split.tail > 0 {
            self.stats.tx_in_place_frames += 1;
            self.stats.tx_in_place_bytes += split.tail as u64;
        }
        Ok(())
    }

    /// Gives the guest back the transmit chains of the last read, in order, and signals it
    /// if it asked to be.
    fn return_tx_chains(&mut self, device: &Arc<Mutex<Device>>, mem: &Arc<GuestMemoryMmap>) {
        if self.tx_heads.is_empty() {
            return;
        }
        let mut guard = lock(device);
        let dev = &mut *guard;
        // The same memory and a queue still running: nothing reset it meanwhile (a reset
        // takes the chains back with it).
        let same = dev.mem.as_ref().is_some_and(|m| Arc::ptr_eq(m, mem));
        if !same || !dev.ready(TX) {
            self.tx_heads.clear();
            return;
        }
        let vq = &mut dev.queues[TX];
        for &head in &self.tx_heads {
            let _ = vq.queue.add_used(&**mem, head, 0);
        }
        self.tx_heads.clear();
        if vq.queue.needs_notification(&**mem).unwrap_or(true) {
            if let Some(call) = &vq.call {
                device::signal(call);
            }
        }
    }

    fn self_kick(&self) {
        let Some(fe) = &self.frontend else {
            return;
        };
        let dev = lock(&fe.device);
        if let Some(kick) = &dev.queues[TX].kick {
            device::signal(kick);
        }
    }

    fn bad_chain(&mut self, e: ChainError) {
        if self.stats.bad_chains == 0 {
            log::warn!("vhost-user: the guest gave an unusable descriptor chain: {e} (dropped; further ones are only counted)");
        }
        self.stats.bad_chains += 1;
    }

    /// Accepts every waiting connection: the first becomes the front-end if there is none,
    /// the others are closed at once.
    fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            let fd = match sock::accept4(listener, SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 just returned this descriptor, which nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    log::warn!("cannot accept a connection on the vhost-user socket: {e}");
                    return;
                }
            };
            if self.frontend.is_some() {
                self.stats.refused += 1;
                log::info!("a second vhost-user front-end connected: closed, one is served");
                continue;
            }
            match self.adopt(fd) {
                Ok(()) => log::info!("vhost-user front-end connected"),
                Err(e) => log::warn!("cannot serve the vhost-user front-end: {e}"),
            }
        }
    }

    /// Closes the front-end and forgets its device; says whether another will be served.
    fn drop_frontend(&mut self, why: Option<String>) -> ReadStatus {
        let served = match self.frontend.take() {
            Some(fe) => {
                for (_, watch) in fe.kick_watch.iter().flatten() {
                    let _ = self.epoll.delete(watch);
                }
                fe.messages > 0 || self.listener.is_none()
            }
            None => false,
        };
        {
            let mut lending = self.lend.borrow_mut();
            lending.lend.forget();
            lending.device = None;
        }
        self.clear_backlog();
        self.tx_more = false;
        if self.one_off && served {
            if let Some(l) = self.listener.take() {
                let _ = self.epoll.delete(&l);
            }
            ReadStatus::Finished(why)
        } else {
            ReadStatus::GuestLeft(why)
        }
    }

    fn clear_backlog(&mut self) {
        let waiting = self.backlog.len() - self.backlog_next;
        self.stats.frames_dropped += waiting as u64;
        self.backlog.clear();
        self.backlog_next = 0;
        self.lend.borrow_mut().backlog_waiting = false;
    }

    /// Puts the queued frames (after any still waiting) into the guest's receive buffers:
    /// those with lent payloads are published where they already are, the others copied;
    /// what doesn't fit waits for more buffers, up to the backlog's bounds.
    pub fn write_frames(&mut self, frames: &FrameQueue) -> WriteReport {
        let total = frames.len();
        let Some(fe) = &self.frontend else {
            self.stats.frames_dropped += total as u64;
            return WriteReport {
                sent: 0,
                dropped: total,
            };
        };
        let device = fe.device.clone();
        let mut guard = lock(&device);
        if !guard.ready(RX) {
            self.stats.frames_dropped += total as u64;
            return WriteReport {
                sent: 0,
                dropped: total,
            };
        }
        let dev = &mut *guard;
        let guest = dev.guest_offloads();
        let epoch = dev.epoch;
        let Some(mem) = dev.mem.as_deref() else {
            return WriteReport {
                sent: 0,
                dropped: total,
            };
        };
        let vq = &mut dev.queues[RX];
        let lending = self.lend.clone();
        let mut lending = lending.borrow_mut();
        let lend = &mut lending.lend;
        lend.sync_epoch(epoch);
        // Chains held for lending but not lent go back to the ring when frames are to be
        // copied now (else they stay held for the next reservation).
        if frames.len() > frames.lent_len() || self.backlog.len() > self.backlog.lent_len() {
            lend.rewind(&mut vq.queue);
        }
        let mut rx = Rx {
            queue: &mut vq.queue,
            mem,
            lend,
            guest,
            scratch: &mut self.rx_scratch,
            finished: &mut self.finished,
            stats: &mut self.stats,
            placed: 0,
        };
        // The backlog first: frames keep their order.
        drain_backlog(&mut rx, &mut self.backlog, &mut self.backlog_next);
        let mut report = WriteReport::default();
        let mut i = 0;
        if self.backlog.is_empty() {
            // What waits keeps the checksums it was built with.
            self.backlog.set_l4_checksum(frames.l4_checksum());
            let placed = place_from(&mut rx, frames, &mut i);
            report.sent += placed.sent;
            report.dropped += placed.dropped;
        }
        // What did not fit, and everything behind frames already waiting, waits in turn.
        for (frame, lent) in frames.entries().skip(i) {
            match lent {
                // A lent frame holds its buffers already: it waits whatever the bounds.
                Some(lent) => {
                    self.backlog.push_lent_headers(frame, lent);
                    rx.stats.backlogged += 1;
                    report.sent += 1;
                }
                None => {
                    let waiting = self.backlog.len() - self.backlog_next;
                    if waiting < BACKLOG_FRAMES
                        && self.backlog.bytes() + frame.len() <= BACKLOG_BYTES
                    {
                        self.backlog.push(|b| b.extend_from_slice(frame));
                        rx.stats.backlogged += 1;
                        report.sent += 1;
                    } else {
                        report.dropped += 1;
                    }
                }
            }
        }
        // A copied frame stuck in front of lent ones with nothing placed: the guest may have
        // no buffers left to add (we hold them), so it goes, for the lent ones to.
        if rx.placed == 0 && !self.backlog.is_empty() && self.backlog.lent_len() > 0 {
            while let Some((_, None)) = self.backlog.entry(self.backlog_next) {
                self.backlog_next += 1;
                rx.stats.frames_dropped += 1;
            }
            drain_backlog(&mut rx, &mut self.backlog, &mut self.backlog_next);
        }
        let Rx { placed, lend, .. } = rx;
        let returned = std::mem::take(&mut lend.returned);
        let lent = lend.stats;
        self.stats.zero_copy_frames = lent.frames;
        self.stats.zero_copy_bytes = lent.bytes;
        self.stats.large_segments_out = lent.large_segments;
        self.stats.lend_no_room = lent.no_room;
        self.stats.bad_chains += lent.bad_chains - self.lend_bad_chains_seen;
        self.lend_bad_chains_seen = lent.bad_chains;
        lending.backlog_waiting = !self.backlog.is_empty();
        // Frames waiting: ask for a kick when the guest adds buffers (with event indices, only
        // a guest told where we are kicks).
        if !self.backlog.is_empty() && vq.queue.enable_notification(mem).unwrap_or(false) {
            // Buffers came meanwhile: the next wake-up's write takes them.
            if let Some(kick) = &vq.kick {
                device::signal(kick);
            }
        }
        if (placed > 0 || returned) && vq.queue.needs_notification(mem).unwrap_or(true) {
            if let Some(call) = &vq.call {
                device::signal(call);
            }
        }
        self.stats.frames_out += placed;
        self.stats.frames_dropped += report.dropped as u64;
        report
    }
}

/// What became of a frame offered to the receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Placed,
    /// Not enough buffers: try again when the guest adds some.
    NoRoom,
    /// Lost (an unusable chain, buffers given up): counted.
    Dropped,
}

/// The receive queue as one write puts frames in.
struct Rx<'a, Q: QueueT> {
    queue: &'a mut Q,
    mem: &'a vm_memory::GuestMemoryMmap,
    lend: &'a mut RxLend,
    guest: GuestOffloads,
    scratch: &'a mut RxScratch,
    finished: &'a mut Vec<u8>,
    stats: &'a mut VhostStats,
    /// Frames placed by this write.
    placed: u64,
}

impl<Q: QueueT> Rx<'_, Q> {
    /// Places one frame: published where its payload is (`lent`), or copied.
    fn place(&mut self, frame: &[u8], lent: Option<LentPayload>, built_partial: bool) -> Placement {
        if let Some(lent) = lent {
            // Lent payloads are built with unfinished checksums only; a guest that stopped
            // taking those would need the payload read back.
            let result = match lent_header(frame, &lent, self.guest) {
                Some(header) => self.lend.publish(self.queue, self.mem, frame, lent, header),
                None => Err(lend::PublishError::Mismatch),
            };
            return match result {
                Ok(_) => {
                    self.stats.checksums_left += 1;
                    self.placed += 1;
                    Placement::Placed
                }
                Err(e) => {
                    log::debug!("vhost-user: a frame in lent buffers dropped: {e}");
                    self.stats.frames_dropped += 1;
                    Placement::Dropped
                }
            };
        }
        let (frame, partial) = checksum_for(frame, built_partial, self.guest.csum, self.finished);
        match virtq::write_rx_frame(self.queue, self.mem, frame, partial, self.scratch) {
            RxOutcome::Placed(_) => {
                self.stats.checksums_left += u64::from(partial.is_some());
                self.placed += 1;
                Placement::Placed
            }
            RxOutcome::NoRoom => Placement::NoRoom,
            RxOutcome::Bad(e) => {
                self.stats.bad_chains += 1;
                log::debug!("vhost-user: receive chain: {e}");
                Placement::Dropped
            }
        }
    }
}

impl<Q: QueueT> Rx<'_, Q> {
    /// A run of copied frames from `frames[first]` on that the guest takes as one (a flow's
    /// datagrams, TCP segments that were not lent) goes so: returns how many frames it
    /// carried. `None` if there is none (a lent frame there, or checksums built finished),
    /// or the guest's buffers can't take it whole now (its frames go or wait one by one then).
    fn place_copied_run(&mut self, frames: &FrameQueue, first: usize) -> Option<usize> {
        if frames.l4_checksum() != L4Checksum::Partial {
            return None;
        }
        let copied = (first..frames.len()).map_while(|j| match frames.entry(j) {
            Some((f, None)) => Some(f),
            _ => None,
        });
        let run = gso::run(copied).filter(|r| self.guest.takes(r))?;
        self.place_run(frames, first, &run).then_some(run.frames)
    }

    /// Places the `run` of copied frames that starts at `frames[first]` as one frame (see
    /// [`gso::run_headers`]); says whether it went.
    fn place_run(&mut self, frames: &FrameQueue, first: usize, run: &Run) -> bool {
        let frame = |k: usize| frames.get(first + k).unwrap_or_default();
        let mut headers = [0u8; gso::MAX_HEADER_LEN];
        let Some(at) = gso::run_headers(frame(0), frame(run.frames - 1), run, &mut headers) else {
            return false;
        };
        let mut parts: [&[u8]; gso::MAX_SEGMENTS + 1] = [&[]; gso::MAX_SEGMENTS + 1];
        parts[0] = &headers[..run.header_len];
        for (k, part) in parts[1..=run.frames].iter_mut().enumerate() {
            *part = frame(k).get(run.header_len..).unwrap_or_default();
        }
        let header = VnetHeader::segments(run, at);
        match virtq::write_rx_parts(
            self.queue,
            self.mem,
            &header,
            &parts[..=run.frames],
            self.scratch,
        ) {
            RxOutcome::Placed(_) => {
                self.stats.checksums_left += 1;
                self.stats.runs_out += 1;
                self.stats.run_frames_out += run.frames as u64;
                self.placed += 1;
                true
            }
            RxOutcome::NoRoom => false,
            RxOutcome::Bad(e) => {
                // Its chains went back empty; its frames try again one by one.
                self.stats.bad_chains += 1;
                log::debug!("vhost-user: receive chain: {e}");
                false
            }
        }
    }
}

/// Places the backlog's frames from `next` on, in order, until one doesn't fit; forgets the
/// backlog once all went.
fn drain_backlog<Q: QueueT>(rx: &mut Rx<'_, Q>, backlog: &mut FrameQueue, next: &mut usize) {
    let placed = place_from(rx, backlog, next);
    rx.stats.frames_dropped += placed.dropped as u64;
    if *next == backlog.len() && !backlog.is_empty() {
        backlog.clear();
        *next = 0;
    }
}

/// What placing frames came to: the frames that went (each a run carried counts), and the
/// ones lost.
#[derive(Debug, Default)]
struct Placed {
    sent: usize,
    dropped: usize,
}

/// Places `frames` from `next` on, in order, until one doesn't fit (`next` is then the first
/// that waits): runs of copied frames as one, lent frames published, the rest copied.
fn place_from<Q: QueueT>(rx: &mut Rx<'_, Q>, frames: &FrameQueue, next: &mut usize) -> Placed {
    let partial = frames.l4_checksum() == L4Checksum::Partial;
    let mut placed = Placed::default();
    while let Some((frame, lent)) = frames.entry(*next) {
        if let Some(n) = rx.place_copied_run(frames, *next) {
            placed.sent += n;
            *next += n;
            continue;
        }
        match rx.place(frame, lent, partial) {
            Placement::NoRoom => break,
            Placement::Placed => placed.sent += 1,
            Placement::Dropped => placed.dropped += 1,
        }
        *next += 1;
    }
    placed
}

/// The device's placement of frames in a receive queue, for a model of the device over a
/// queue and memory of its own (the simulator's): `frames` from `next` on go as
/// [`VhostUserLink::write_frames`] places them, until one doesn't fit (`next` is then the first
/// that waits). Returns the counts of what went (placed, runs, drops).
pub fn place_frames<Q: QueueT>(
    queue: &mut Q,
    mem: &GuestMemoryMmap,
    lend: &mut RxLend,
    guest: GuestOffloads,
    scratch: &mut RxScratch,
    frames: &FrameQueue,
    next: &mut usize,
) -> VhostStats {
    let mut stats = VhostStats::default();
    let mut finished = Vec::new();
    let mut rx = Rx {
        queue,
        mem,
        lend,
        guest,
        scratch,
        finished: &mut finished,
        stats: &mut stats,
        placed: 0,
    };
    let placed = place_from(&mut rx, frames, next);
    stats.frames_out = rx.placed;
    stats.frames_dropped = placed.dropped as u64;
    stats
}

/// A frame to the guest as it goes into its buffers, and where its checksum is left to finish:
/// a frame built with its checksum unfinished (`built_partial`) goes so to a guest that takes
/// that (GUEST_CSUM), and is finished in `finished` for one that doesn't (a guest that
/// renegotiated its features while frames waited).
fn checksum_for<'a>(
    frame: &'a [u8],
    built_partial: bool,
    guest_csum: bool,
    finished: &'a mut Vec<u8>,
) -> (&'a [u8], Option<ChecksumAt>) {
    if !built_partial {
        return (frame, None);
    }
    let at = partial_checksum_at(frame);
    if guest_csum || at.is_none() {
        return (frame, at);
    }
    finished.clear();
    finished.extend_from_slice(frame);
    finish_partial_checksum(finished);
    (&finished[..], None)
}

/// VHOST_USER_SET_VRING_ENABLE: request code, and the header's flags.
const SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION_1: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

/// qemu disables the rings (SET_VRING_ENABLE, asking for a reply) before it sets the features;
/// the `vhost` crate refuses that message without the reply, and qemu would wait for it for
/// ever. So, until the features are set, that one message is handled here: peeked, taken,
/// applied and answered. Says whether it was.
fn early_vring_enable(fe: &mut Frontend) -> io::Result<bool> {
    if lock(&fe.device).protocol_features_acked() {
        return Ok(false);
    }
    // Header (request, flags, size) and body (index, num): five 32-bit words.
    let mut msg = [0u8; 20];
    // SAFETY: a peek into a local buffer, at most its length.
    let n = unsafe {
        libc::recv(
            fe.connection,
            msg.as_mut_ptr().cast(),
            msg.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let word =
        |msg: &[u8; 20], i: usize| u32::from_le_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    if n != msg.len() as isize || word(&msg, 0) != SET_VRING_ENABLE || word(&msg, 8) != 8 {
        return Ok(false);
    }
    // SAFETY: takes the bytes just peeked into the same local buffer.
    let n = unsafe { libc::recv(fe.connection, msg.as_mut_ptr().cast(), msg.len(), 0) };
    if n != msg.len() as isize {
        return Err(io::Error::other("SET_VRING_ENABLE cut short"));
    }
    let (flags, index, num) = (word(&msg, 4), word(&msg, 12), word(&msg, 16));
    let ok = {
        let mut dev = lock(&fe.device);
        match dev.queues.get_mut(index as usize) {
            Some(q) if num <= 1 => {
                q.enabled = num == 1;
                true
            }
            _ => false,
        }
    };
    if flags & FLAG_NEED_REPLY != 0 {
        let mut reply = [0u8; 20];
        reply[0..4].copy_from_slice(&SET_VRING_ENABLE.to_le_bytes());
        reply[4..8].copy_from_slice(&(FLAG_VERSION_1 | FLAG_REPLY).to_le_bytes());
        reply[8..12].copy_from_slice(&8u32.to_le_bytes());
        reply[12..20].copy_from_slice(&u64::from(!ok).to_le_bytes());
        // SAFETY: sends a local buffer on the connection we hold.
        let n = unsafe {
            libc::send(
                fe.connection,
                reply.as_ptr().cast(),
                reply.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n != reply.len() as isize {
            return Err(io::Error::other("cannot answer SET_VRING_ENABLE"));
        }
    }
    Ok(true)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on a descriptor we hold.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_blocking_with_timeout(fd: RawFd) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: MESSAGE_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: plain fcntl and setsockopt on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
