//! passt's guest link: the UNIX domain socket qemu connects to (`-netdev stream`, or
//! `-net socket,fd=N` through qrap), carrying Ethernet frames each preceded by a 4-byte
//! big-endian length (see `sans_io::wire::stream`).
//!
//! One guest at a time: while a client is connected, further clients are accepted and closed
//! at once; when it leaves, the next one is served, or, one-off, nothing more is. Reads take
//! many frames per system call (they are handed out in place from the decoder's buffer);
//! writes send many frames per `sendmsg`, each with its prefix as its own I/O vector. A write
//! the socket only partly takes is finished before anything else goes out, because the stream
//! has no other way to find the next frame boundary.
//!
//! The listener and the client sit in an epoll instance of their own, whose descriptor
//! ([`QemuSocket::fd`]) the main loop watches: it becomes readable when either has news, so the
//! loop never needs to know which client is current.

use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{self as sock, Backlog, SockFlag, UnixAddr};
use sans_io::wire::stream::{self, StreamDecoder, HEADER_LEN};
use sans_io::wire::FrameQueue;

use crate::socket_sys::{errno_of, unix_stream_socket};
use crate::tokens::{QEMU_CLIENT, QEMU_LISTENER};

/// The paths tried when none is given: `/tmp/passt_1.socket` to `/tmp/passt_64.socket`.
pub fn default_paths() -> impl Iterator<Item = PathBuf> {
    (1..=64).map(|n| PathBuf::from(format!("/tmp/passt_{n}.socket")))
}

/// Largest frame accepted from the guest: the 65520-byte MTU, an Ethernet header, and room.
pub const MAX_FRAME: usize = 65536 + 64;
/// Bytes read per system call at most: many small frames, or a few large ones.
const READ_CAPACITY: usize = 8 * (MAX_FRAME + HEADER_LEN);
/// I/O vectors per `sendmsg` (the kernel's `UIO_MAXIOV` is 1024): two per frame.
const MAX_IOV: usize = 1024;
/// Frames of one read handed to the engine together at most (a read of small frames makes
/// several such lists).
const FRAMES_PER_HANDOVER: usize = 64;
/// How long one batch of writes may wait for qemu to make room before the rest of the batch is
/// dropped. While qemu lags that much, later batches don't wait at all (see `congested`).
const WRITE_WAIT: Duration = Duration::from_millis(100);
/// Send buffer asked for: fewer waits for qemu at high rates (the kernel may cap it).
const SEND_BUFFER: libc::c_int = 4 << 20;

/// Setting up the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("UNIX domain socket path {0} is in use by a running instance")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
    #[error("no free UNIX domain socket path between {first} and {last}")]
    NoFreePath { first: PathBuf, last: PathBuf },
    #[error("UNIX domain socket {path}: {what}: {errno}")]
    Sys {
        path: PathBuf,
        what: &'static str,
        errno: Errno,
    },
}

/// Creates a listening socket at `path`. A socket file there that nobody accepts on (left by
/// an instance that ended) is replaced; one somebody listens on is [`SocketError::InUse`].
pub fn bind_listener(path: &Path) -> Result<OwnedFd, SocketError> {
    let sys = |what, errno| SocketError::Sys {
        path: path.to_owned(),
        what,
        errno,
    };
    let addr = UnixAddr::new(path).map_err(|e| sys("invalid path", e))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(SocketError::NotASocket(path.to_owned()));
            }
            if in_use(&addr) {
                return Err(SocketError::InUse(path.to_owned()));
            }
            // Stale: nobody accepts on it.
            std::fs::remove_file(path)
                .map_err(|e| sys("removing the stale socket", errno_of(&e)))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sys("checking the path", errno_of(&e))),
    }
    let fd = unix_stream_socket().map_err(|e| sys("socket", e))?;
    sock::bind(fd.as_raw_fd(), &addr).map_err(|e| match e {
        // Somebody bound it between our check and now.
        Errno::EADDRINUSE => SocketError::InUse(path.to_owned()),
        e => sys("bind", e),
    })?;
    sock::listen(&fd, Backlog::new(8).unwrap_or(Backlog::MAXCONN)).map_err(|e| sys("listen", e))?;
    Ok(fd)
}

/// Binds the first of `paths` that is free (see [`bind_listener`]); returns it with its path.
pub fn bind_first_free(
    paths: impl IntoIterator<Item = PathBuf>,
) -> Result<(OwnedFd, PathBuf), SocketError> {
    let mut first = None;
    let mut last = PathBuf::new();
    for path in paths {
        first.get_or_insert_with(|| path.clone());
        match bind_listener(&path) {
            Ok(fd) => return Ok((fd, path)),
            Err(SocketError::InUse(_) | SocketError::NotASocket(_)) => {}
            Err(SocketError::Sys {
                errno: Errno::EACCES | Errno::EPERM,
                ..
            }) => {} // Somebody else's stale file.
            Err(e) => return Err(e),
        }
        last = path;
    }
    Err(SocketError::NoFreePath {
        first: first.unwrap_or_default(),
        last,
    })
}

/// Whether something accepts connections at `addr`: a non-blocking connect that succeeds, or
/// finds the backlog full, says so; a refusal means a stale file.
fn in_use(addr: &UnixAddr) -> bool {
    let Ok(probe) = unix_stream_socket() else {
        return true;
    };
    match sock::connect(probe.as_raw_fd(), addr) {
        Ok(()) | Err(Errno::EAGAIN) => true,
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => false,
        Err(_) => true,
    }
}

/// What a read found out about the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStatus {
    /// Connected (or waiting for the first client); frames, if any, were handed over.
    Open,
    /// The guest went away (with the reason if it wasn't a plain close); the next client will
    /// be served.
    GuestLeft(Option<String>),
    /// The guest went away and, one-off, no other will be served.
    Finished(Option<String>),
}

/// What became of a batch of frames for the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub sent: usize,
    /// No guest connected, qemu too slow to take them in time, or the connection broke.
    pub dropped: usize,
}

/// Counters over the socket's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuStats {
    pub clients: u64,
    /// Clients closed at once because another one was connected.
    pub refused: u64,
    pub frames_in: u64,
    /// Reads from the client (system calls, `EAGAIN` ones included).
    pub reads: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    /// Batches whose writes ran out of time waiting for qemu.
    pub write_stalls: u64,
}

/// The qemu socket, see the module documentation.
pub struct QemuSocket {
    epoll: Epoll,
    listener: Option<OwnedFd>,
    client: Option<OwnedFd>,
    one_off: bool,
    decoder: StreamDecoder,
    /// Scratch for one `sendmsg`: prefixes, and the vectors pointing at them and at frames.
    headers: Vec<[u8; HEADER_LEN]>,
    iov: Vec<libc::iovec>,
    /// The unsent end of a frame the socket took only part of.
    pending: Vec<u8>,
    /// The last batch ran out of time: don't wait for qemu until a batch goes out whole.
    congested: bool,
    /// Frames the current client sent.
    client_frames: u64,
    stats: QemuStats,
}

impl QemuSocket {
    /// Serves clients connecting to `listener` (from [`bind_listener`]), one at a time; with
    /// `one_off`, only the first.
    pub fn listen(listener: OwnedFd, one_off: bool) -> io::Result<QemuSocket> {
        let s = QemuSocket::new(one_off)?;
        s.epoll.add(
            &listener,
            EpollEvent::new(EpollFlags::EPOLLIN, QEMU_LISTENER),
        )?;
        Ok(QemuSocket {
            listener: Some(listener),
            ..s
        })
    }

    /// Serves the already connected socket `fd` (passt's `--fd`), and no other client.
    pub fn connected(fd: OwnedFd) -> io::Result<QemuSocket> {
        let mut s = QemuSocket::new(true)?;
        s.adopt(fd)?;
        Ok(s)
    }

    fn new(one_off: bool) -> io::Result<QemuSocket> {
        Ok(QemuSocket {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            listener: None,
            client: None,
            one_off,
            decoder: StreamDecoder::new(READ_CAPACITY, MAX_FRAME),
            headers: Vec::with_capacity(MAX_IOV / 2),
            iov: Vec::with_capacity(MAX_IOV),
            pending: Vec::with_capacity(MAX_FRAME + HEADER_LEN),
            congested: false,
            client_frames: 0,
            stats: QemuStats::default(),
        })
    }

    /// Readable when a client connects, sends, or leaves: watch it for input.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    pub fn has_client(&self) -> bool {
        self.client.is_some()
    }

    pub fn stats(&self) -> &QemuStats {
        &self.stats
    }

    fn adopt(&mut self, fd: OwnedFd) -> io::Result<()> {
        set_nonblocking(fd.as_raw_fd())?;
        // Best effort: a larger send buffer means fewer waits for qemu. As root the limit
        // can be passed; otherwise the kernel caps the request.
        for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
            // SAFETY: plain setsockopt with an int.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&SEND_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
        self.epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, QEMU_CLIENT))?;
        self.client = Some(fd);
        self.client_frames = 0;
        self.stats.clients += 1;
        self.decoder.reset();
        self.pending.clear();
        self.congested = false;
        Ok(())
    }

    /// Accepts every waiting connection: the first becomes the client if there is none, the
    /// others are closed at once. A client that hung up meanwhile makes way for the new one:
    /// what that means is returned (see [`Self::drop_client`]).
    fn accept_all(&mut self) -> Option<ReadStatus> {
        let mut departed = None;
        loop {
            let listener = self.listener.as_ref().map(AsRawFd::as_raw_fd)?;
            let fd = match sock::accept4(listener, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)
            {
                // SAFETY: accept4 just returned this descriptor, which nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return departed,
                Err(e) => {
                    // Out of descriptors and the like: the connection stays queued, and will
                    // be taken on a later wake-up.
                    log::warn!("cannot accept a connection on the qemu socket: {e}");
                    return departed;
                }
            };
            if self.client_hung_up() {
                let status = self.drop_client(None);
                let finished = matches!(status, ReadStatus::Finished(_));
                departed = Some(status);
                if finished {
                    return departed;
                }
            }
            if self.client.is_some() {
                self.stats.refused += 1;
                log::info!("a second client connected to the qemu socket: closed, one is served");
                drop(fd);
                continue;
            }
            match self.adopt(fd) {
                Ok(()) => log::info!("guest connected to the qemu socket"),
                Err(e) => log::warn!("cannot serve the client: {e}"),
            }
        }
    }

    /// Whether the current client closed its end (whatever it sent last is of no use now).
    fn client_hung_up(&self) -> bool {
        let Some(fd) = &self.client else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd of ours, no waiting.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Handles what is waiting: up to `max_reads` reads from the client, handing the complete
    /// frames of each read to `on_frames` at once (in place: copy what you keep), then new
    /// connections if the client had nothing or left.
    pub fn read_frames(
        &mut self,
        max_reads: usize,
        on_frames: &mut dyn FnMut(&mut dyn Iterator<Item = &[u8]>),
    ) -> io::Result<ReadStatus> {
        // The client first, without asking our epoll which of the two has news: a guest
        // sending is by far the common reason, and its read tells. The listener is asked only
        // when the client had nothing, or left (a client connecting right after it is the next
        // one, not a second one to turn away). A connection waiting while the guest keeps
        // sending keeps our epoll readable: it is taken on the wake-up whose read finds the
        // guest quiet.
        let (mut status, read_any) = if self.client.is_some() {
            self.read_client(max_reads, on_frames)
        } else {
            (ReadStatus::Open, false)
        };
        let quiet_or_gone = !read_any || matches!(status, ReadStatus::GuestLeft(_));
        if quiet_or_gone && !matches!(status, ReadStatus::Finished(_)) {
            // A client taken now that sent already makes the epoll readable again.
            if let Some(departed) = self.accept_all() {
                if status == ReadStatus::Open {
                    status = departed;
                }
            }
        }
        Ok(status)
    }

    /// Up to `max_reads` reads from the client; says whether any brought bytes. A read that
    /// takes less than the room it had emptied the socket: no read follows just to hear
    /// `EAGAIN` (level-triggered, our epoll reports what comes later).
    fn read_client(
        &mut self,
        max_reads: usize,
        on_frames: &mut dyn FnMut(&mut dyn Iterator<Item = &[u8]>),
    ) -> (ReadStatus, bool) {
        let Some(fd) = self.client.as_ref().map(AsRawFd::as_raw_fd) else {
            return (ReadStatus::Open, false);
        };
        let mut read_any = false;
        for _ in 0..max_reads.max(1) {
            let room = self.decoder.spare();
            let room_len = room.len();
            // SAFETY: reads into the decoder's spare room, at most its length.
            let n = unsafe { libc::read(fd, room.as_mut_ptr().cast(), room_len) };
            self.stats.reads += 1;
            if n == 0 {
                let why = (self.decoder.pending() > 0).then(|| {
                    format!(
                        "the guest closed the connection {} bytes into a frame",
                        self.decoder.pending()
                    )
                });
                return (self.drop_client(why), read_any);
            }
            if n < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    Errno::EAGAIN => break,
                    Errno::ECONNRESET => return (self.drop_client(None), read_any),
                    e => {
                        let why = format!("reading from the guest: {e}");
                        return (self.drop_client(Some(why)), read_any);
                    }
                }
            }
            read_any = true;
            self.decoder.filled(n as usize);
            // The read's frames, handed over together in chunks of a bounded list.
            let mut broken = None;
            loop {
                let mut at: [Range<usize>; FRAMES_PER_HANDOVER] = std::array::from_fn(|_| 0..0);
                let mut count = 0;
                while count < FRAMES_PER_HANDOVER {
                    match self.decoder.next_frame_at() {
                        Ok(Some(frame)) => {
                            at[count] = frame;
                            count += 1;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            broken = Some(e);
                            break;
                        }
                    }
                }
                self.stats.frames_in += count as u64;
                self.client_frames += count as u64;
                if count > 0 {
                    let received = self.decoder.received();
                    on_frames(&mut at[..count].iter().map(|r| &received[r.clone()]));
                }
                if count < FRAMES_PER_HANDOVER || broken.is_some() {
                    break;
                }
            }
            if let Some(e) = broken {
                return (
                    self.drop_client(Some(format!("{e}: disconnecting"))),
                    read_any,
                );
            }
            if (n as usize) < room_len {
                break;
            }
        }
        (ReadStatus::Open, read_any)
    }

    /// Closes the client; says whether another will be served.
    fn drop_client(&mut self, why: Option<String>) -> ReadStatus {
        if let Some(fd) = self.client.take() {
            let _ = self.epoll.delete(&fd);
        }
        self.decoder.reset();
        self.pending.clear();
        self.congested = false;
        // A connection that never sent a frame is no guest: another instance probing for a
        // free path, or qrap looking for a passt that isn't busy. It doesn't use up one-off.
        let served = self.listener.is_none() || self.client_frames > 0;
        if self.one_off && served {
            if let Some(l) = self.listener.take() {
                let _ = self.epoll.delete(&l);
            }
            ReadStatus::Finished(why)
        } else {
            ReadStatus::GuestLeft(why)
        }
    }

    /// Sends the queued frames to the guest, batched; see [`WriteReport`] for what may be lost.
    pub fn write_frames(&mut self, frames: &FrameQueue) -> WriteReport {
        let report = self.write_inner(frames);
        self.stats.frames_out += report.sent as u64;
        self.stats.frames_dropped += report.dropped as u64;
        report
    }

    fn write_inner(&mut self, frames: &FrameQueue) -> WriteReport {
        let total = frames.len();
        let Some(fd) = self.client.as_ref().map(AsRawFd::as_raw_fd) else {
            return WriteReport {
                sent: 0,
                dropped: total,
            };
        };
        let deadline = (!self.congested).then(|| Instant::now() + WRITE_WAIT);
        let had_pending = !self.pending.is_empty();
        match self.finish_pending(fd, deadline) {
            // Finishing a frame proves qemu reads again; an empty flush proves nothing.
            Flow::Done if had_pending => self.congested = false,
            Flow::Done if total == 0 => return WriteReport::default(),
            Flow::Done => {}
            Flow::OutOfTime => {
                self.stall();
                return WriteReport {
                    sent: 0,
                    dropped: total,
                };
            }
            Flow::Broken => {
                return WriteReport {
                    sent: 0,
                    dropped: total,
                }
            }
        }
        let mut next = 0;
        while next < total {
            // One sendmsg for as many frames as the vectors hold.
            let end = (next + MAX_IOV / 2).min(total);
            self.headers.clear();
            self.iov.clear();
            for i in next..end {
                let f = frames.get(i).unwrap_or_default();
                self.headers.push(stream::header(f.len()));
            }
            for (k, i) in (next..end).enumerate() {
                let f = frames.get(i).unwrap_or_default();
                self.iov.push(libc::iovec {
                    iov_base: self.headers[k].as_ptr() as *mut _,
                    iov_len: HEADER_LEN,
                });
                self.iov.push(libc::iovec {
                    iov_base: f.as_ptr() as *mut _,
                    iov_len: f.len(),
                });
            }
            let n = match send_iov(fd, &self.iov) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => {
                    if wait_writable(fd, deadline) {
                        continue;
                    }
                    self.stall();
                    return WriteReport {
                        sent: next,
                        dropped: total - next,
                    };
                }
                Err(e) => {
                    self.broken(fd, e);
                    return WriteReport {
                        sent: next,
                        dropped: total - next,
                    };
                }
            };
            // Which frames went out whole, and how much of the next one.
            let mut left = n;
            let mut i = next;
            while i < end {
                let record = HEADER_LEN + frames.get(i).map_or(0, <[u8]>::len);
                if left < record {
                    break;
                }
                left -= record;
                i += 1;
            }
            if i < end && left > 0 {
                // Part of frame i went out: the rest must follow before anything else.
                let f = frames.get(i).unwrap_or_default();
                let header = stream::header(f.len());
                self.pending.clear();
                if left < HEADER_LEN {
                    self.pending.extend_from_slice(&header[left..]);
                    self.pending.extend_from_slice(f);
                } else {
                    self.pending.extend_from_slice(&f[left - HEADER_LEN..]);
                }
                i += 1;
                match self.finish_pending(fd, deadline) {
                    Flow::Done => {}
                    Flow::OutOfTime => {
                        self.stall();
                        return WriteReport {
                            sent: i,
                            dropped: total - i,
                        };
                    }
                    Flow::Broken => {
                        return WriteReport {
                            sent: i - 1,
                            dropped: total - (i - 1),
                        }
                    }
                }
            }
            next = i;
        }
        self.congested = false;
        WriteReport {
            sent: total,
            dropped: 0,
        }
    }

    /// Sends what is left of a partly sent frame, waiting for room until `deadline`.
    fn finish_pending(&mut self, fd: RawFd, deadline: Option<Instant>) -> Flow {
        let mut off = 0;
        while off < self.pending.len() {
            let iov = [libc::iovec {
                iov_base: self.pending[off..].as_ptr() as *mut _,
                iov_len: self.pending.len() - off,
            }];
            match send_iov(fd, &iov) {
                Ok(n) => off += n,
                Err(Errno::EAGAIN) => {
                    if !wait_writable(fd, deadline) {
                        self.pending.drain(..off);
                        return Flow::OutOfTime;
                    }
                }
                Err(e) => {
                    self.broken(fd, e);
                    return Flow::Broken;
                }
            }
        }
        self.pending.clear();
        Flow::Done
    }

    fn stall(&mut self) {
        self.stats.write_stalls += 1;
        if !self.congested {
            log::debug!("qemu is not reading: dropping frames for the guest until it does");
        }
        self.congested = true;
    }

    /// The connection failed while writing: shut it down, so that the next read reports
    /// the guest gone.
    fn broken(&mut self, fd: RawFd, e: Errno) {
        if e != Errno::EPIPE && e != Errno::ECONNRESET {
            log::warn!("writing to the guest: {e}");
        }
        self.pending.clear();
        // SAFETY: shutting down our own socket; the descriptor stays open.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

enum Flow {
    Done,
    OutOfTime,
    Broken,
}

fn send_iov(fd: RawFd, iov: &[libc::iovec]) -> Result<usize, Errno> {
    // SAFETY: the message points at `iov`, whose vectors point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = iov.len();
    loop {
        // SAFETY: see above; no ancillary data.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Waits until `fd` can take more, at most until `deadline` (not at all without one).
fn wait_writable(fd: RawFd, deadline: Option<Instant>) -> bool {
    let Some(deadline) = deadline else {
        return false;
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one pollfd of ours.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            // Writable, or an error the next send reports.
            return true;
        }
        if r < 0 && Errno::last() != Errno::EINTR {
            return true;
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
