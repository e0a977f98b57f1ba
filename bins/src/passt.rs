//! passt's life: create the UNIX domain socket qemu connects to (or take a connected one from
//! `--fd`), say how to start qemu against it, go to the background, then run the data path for
//! one guest at a time until a signal, or, one-off, until the guest leaves.
//!
//! Everything past the socket is pasta's: the same engine, host sockets and main loop; only
//! the guest link differs.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use os_shim::isolation::Identity;
use os_shim::qemu_socket::{self, QemuSocket, ReadStatus};
use os_shim::reactor::Reactor;
use os_shim::seccomp::Profile;
use os_shim::sockets::Sockets;
use os_shim::vhost_user::VhostUserLink;
use sans_io::config::Config;
use sans_io::wire::external::{GuestFrame, NoExternal};
use sans_io::wire::lent::PayloadLender;
use sans_io::wire::offload::L4Checksum;
use sans_io::wire::FrameQueue;

use crate::capture::CaptureLink;
use crate::cli::Cli;
use crate::control::ControlServer;
use crate::datapath::{self, Exit, FramePool, GuestLink, LinkStats, LinkStatus, OnFrames};
use crate::shutdown::ExitAtOnce;
use crate::{forwards, pasta, process, sandbox, EXIT_FAILURE};

/// Frames per read system call assumed when turning the loop's frame budget into reads.
const FRAMES_PER_READ: usize = 16;

/// The qemu socket as the data path's guest link.
struct QemuLink(QemuSocket);

impl GuestLink for QemuLink {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd()
    }

    fn read_frames(
        &mut self,
        _pool: &mut FramePool,
        max: usize,
        on_frames: &mut OnFrames<'_>,
    ) -> std::io::Result<LinkStatus> {
        let reads = max.div_ceil(FRAMES_PER_READ).max(1);
        let whole = &mut |frames: &mut dyn Iterator<Item = &[u8]>| {
            on_frames(&mut frames.map(GuestFrame::whole), &NoExternal)
        };
        Ok(match self.0.read_frames(reads, whole)? {
            ReadStatus::Open => LinkStatus::Open,
            ReadStatus::GuestLeft(why) => LinkStatus::GuestLeft(why),
            ReadStatus::Finished(why) => LinkStatus::Finished(why),
        })
    }

    fn write_frames(&mut self, frames: &FrameQueue) -> usize {
        self.0.write_frames(frames).dropped
    }
}

/// The vhost-user link as the data path's guest link.
struct VhostLink(VhostUserLink);

impl GuestLink for VhostLink {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd()
    }

    fn read_frames(
        &mut self,
        _pool: &mut FramePool,
        _max: usize,
        on_frames: &mut OnFrames<'_>,
    ) -> std::io::Result<LinkStatus> {
        Ok(match self.0.read_frames(on_frames)? {
            ReadStatus::Open => LinkStatus::Open,
            ReadStatus::GuestLeft(why) => LinkStatus::GuestLeft(why),
            ReadStatus::Finished(why) => LinkStatus::Finished(why),
        })
    }

    fn write_frames(&mut self, frames: &FrameQueue) -> usize {
        self.0.write_frames(frames).dropped
    }

    /// Unfinished checksums once the guest negotiated GUEST_CSUM.
    fn l4_checksum(&self) -> L4Checksum {
        self.0.l4_checksum()
    }

    /// The receive queue's buffers, for host TCP data to be peeked straight into.
    fn payload_lender(&mut self) -> Option<Box<dyn PayloadLender>> {
        Some(self.0.payload_lender())
    }
}

/// Either of passt's guest links, with what it says about itself at the end.
trait PasstLink {
    fn as_guest_link(&mut self) -> &mut dyn GuestLink;
    fn summary(&self) -> String;
}

impl PasstLink for QemuLink {
    fn as_guest_link(&mut self) -> &mut dyn GuestLink {
        self
    }

    fn summary(&self) -> String {
        let s = self.0.stats();
        format!(
            "qemu socket: {} clients ({} refused), {} frames in ({} reads), {} out, {} dropped, \
             {} write stalls",
            s.clients,
            s.refused,
            s.frames_in,
            s.reads,
            s.frames_out,
            s.frames_dropped,
            s.write_stalls
        )
    }
}

impl PasstLink for VhostLink {
    fn as_guest_link(&mut self) -> &mut dyn GuestLink {
        self
    }

    fn summary(&self) -> String {
        let s = self.0.stats();
        format!(
            "vhost-user: {} front-ends ({} refused), {} messages, {} frames in, {} out, \
             {} dropped, {} waited for buffers, {} unusable chains, {} checksums left to the \
             guest, {} frames ({} bytes) peeked straight into its buffers ({} of several \
             segments; {} times its buffers had no room for one and the frames were copied), \
             {} runs of {} frames sent as one frame each, {} frames ({} bytes) sent from its \
             memory, {} segments of up to 64 KiB from it (TSO), {} runs of datagrams \
             from it cut into {} ({} that didn't cut dropped), {} wake-ups on the transmit \
             kick alone",
            s.frontends,
            s.refused,
            s.messages,
            s.frames_in,
            s.frames_out,
            s.frames_dropped,
            s.backlogged,
            s.bad_chains,
            s.checksums_left,
            s.zero_copy_frames,
            s.zero_copy_bytes,
            s.large_segments_out,
            s.lend_no_room,
            s.runs_out,
            s.run_frames_out,
            s.tx_in_place_frames,
            s.tx_in_place_bytes,
            s.tx_segmented_frames,
            s.tx_udp_runs.runs,
            s.tx_udp_runs.datagrams,
            s.tx_udp_runs.dropped,
            s.kick_only_wakeups
        )
    }
}

/// Runs passt; returns the process exit status.
pub fn run(cli: &Cli, config: Config, identity: Option<Identity>) -> i32 {
    match run_inner(cli, config, identity) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("passt: {e}");
            EXIT_FAILURE
        }
    }
}

fn run_inner(cli: &Cli, config: Config, identity: Option<Identity>) -> Result<i32, String> {
    let socket = open_socket(cli)?;
    let path = match &socket {
        Socket::Listening(_, path) => Some(path.clone()),
        Socket::Connected(_) => None,
    };
    let mut link = open_link(cli, socket)?;
    // The control socket: bound while the filesystem is there, kept as a descriptor.
    let mut control = match &cli.conf_path {
        Some(path) => Some(ControlServer::bind(path)?),
        None => None,
    };

    // Forwarded ports listen before anybody hears we're ready.
    let mut sockets = Sockets::new();
    let mut engine = pasta::engine_for(config)?;
    forwards::listen_at_start(&mut engine, &mut sockets);

    if let Some(path) = &path {
        let how = if cli.vhost_user {
            how_to_connect_vhost_user(path)
        } else {
            how_to_connect(path)
        };
        for line in how.lines() {
            log::info!("{line}");
        }
    }
    if cli.foreground {
        process::write_pid_file(cli.pid_file.as_deref(), std::process::id())?;
    } else {
        process::daemonize(cli.pid_file.as_deref())?;
    }

    // --pcap: every frame crossing the guest link, both ways (the capture finishes checksums
    // a vhost-user guest was left to finish).
    let (mut captured, mut plain) = (None, None);
    match &cli.pcap {
        Some(path) => {
            captured = Some(
                CaptureLink::create(link.as_guest_link(), path)
                    .map_err(|e| format!("cannot open capture file {}: {e}", path.display()))?,
            )
        }
        None => plain = Some(link.as_guest_link()),
    }

    // Everything with a path is open: the socket, the PID file, the log, the capture. From
    // here on passt is who it runs as, in namespaces of its own, on an empty filesystem.
    sandbox::passt_before_loop(identity).map_err(|e| format!("cannot isolate: {e}"))?;
    let reactor = Reactor::new(&pasta::STOP_SIGNALS)
        .map_err(|e| format!("cannot set up the event loop: {e}"))?;
    let profile = if cli.vhost_user {
        Profile::PasstVhostUser
    } else {
        Profile::Passt
    };
    sandbox::lock_down_profile(profile).map_err(|e| format!("cannot isolate: {e}"))?;
    let mut stats = LinkStats::default();
    let extras = datapath::Extras {
        watches: &mut [],
        auto: None,
        control: control.as_mut(),
        stop: &mut ExitAtOnce,
    };
    let guest_link: &mut dyn GuestLink = match (captured.as_mut(), plain.take()) {
        (Some(c), _) => c,
        (None, Some(l)) => l,
        (None, None) => unreachable!("the link is either captured or not"),
    };
    let exit = datapath::run(
        &mut engine,
        guest_link,
        &reactor,
        &mut sockets,
        extras,
        &mut stats,
    );
    drop(captured);
    // The PID file stays, as the C passt leaves it: whoever reads it after we exit (libvirt)
    // finds the PID of a process that is gone, not a missing file. So does the socket file:
    // the filesystem is out of reach by now (the next passt reuses it, nobody listening).
    log::debug!("{}", link.summary());
    log::debug!("{}", datapath::host_sockets_summary(sockets.stats()));
    Ok(match exit {
        Exit::Done(code) => code,
        Exit::Signal(_) => 0,
        Exit::LinkError(e) => {
            eprintln!("passt: {e}");
            EXIT_FAILURE
        }
    })
}

/// Where the guest link comes from: a connected socket (`--fd`), or one we listen on.
enum Socket {
    Connected(OwnedFd),
    Listening(OwnedFd, PathBuf),
}

/// The socket from `--fd`, `--socket`, or the first free default path.
fn open_socket(cli: &Cli) -> Result<Socket, String> {
    if let Some(fd) = cli.fd {
        return Ok(Socket::Connected(inherited_socket(fd)?));
    }
    let (listener, path) = match &cli.socket_path {
        Some(path) => (
            qemu_socket::bind_listener(path).map_err(|e| e.to_string())?,
            path.clone(),
        ),
        None => {
            qemu_socket::bind_first_free(qemu_socket::default_paths()).map_err(|e| e.to_string())?
        }
    };
    Ok(Socket::Listening(listener, path))
}

/// The guest link on `socket`: qemu's stream socket, or vhost-user's.
fn open_link(cli: &Cli, socket: Socket) -> Result<Box<dyn PasstLink>, String> {
    let watch = |e: std::io::Error| format!("cannot watch the socket: {e}");
    Ok(match (socket, cli.vhost_user) {
        (Socket::Connected(fd), false) => Box::new(QemuLink(
            QemuSocket::connected(fd).map_err(|e| format!("cannot use the --fd socket: {e}"))?,
        )),
        (Socket::Listening(l, _), false) => {
            Box::new(QemuLink(QemuSocket::listen(l, cli.one_off).map_err(watch)?))
        }
        (Socket::Connected(fd), true) => Box::new(VhostLink(
            VhostUserLink::connected(fd).map_err(|e| format!("cannot use the --fd socket: {e}"))?,
        )),
        (Socket::Listening(l, _), true) => Box::new(VhostLink(
            VhostUserLink::listen(l, cli.one_off).map_err(watch)?,
        )),
    })
}

/// Takes ownership of descriptor `fd`, after checking that it is an open stream socket.
fn inherited_socket(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: fstat into a local struct; any descriptor number is safe to ask about.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(format!("--fd {fd}: {}", std::io::Error::last_os_error()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(format!("--fd {fd}: not a socket"));
    }
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 || ty != libc::SOCK_STREAM {
        return Err(format!("--fd {fd}: not a stream socket"));
    }
    // SAFETY: the descriptor is open (fstat worked) and, by the user's word, ours alone.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not for the children of anything we might run.
    // SAFETY: plain fcntl on our descriptor.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}

/// What the user needs to connect a guest to the socket at `path`.
pub fn how_to_connect(path: &Path) -> String {
    let p = path.display();
    format!(
        "Listening for a guest on UNIX domain socket {p}\n\
         Connect qemu 7.2 or later with:\n    \
         qemu-system-x86_64 ... -device virtio-net-pci,netdev=net0 \\\n        \
         -netdev stream,id=net0,server=off,addr.type=unix,addr.path={p}\n\
         or an older qemu through qrap, which connects and passes the socket as descriptor 5:\n    \
         qrap 5 qemu-system-x86_64 ... -net socket,fd=5 -net nic,model=virtio"
    )
}

/// What the user needs to connect qemu to the vhost-user socket at `path`.
pub fn how_to_connect_vhost_user(path: &Path) -> String {
    let p = path.display();
    format!(
        "Listening for a vhost-user front-end on UNIX domain socket {p}\n\
         Connect qemu (guest memory must be shared) with:\n    \
         qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=MEMORY,share=on \\\n        \
         -numa node,memdev=mem -chardev socket,id=chr0,path={p} \\\n        \
         -netdev vhost-user,id=net0,chardev=chr0 -device virtio-net-pci,netdev=net0"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_socket_for_both_ways_of_connecting() {
        let text = how_to_connect(Path::new("/tmp/passt_3.socket"));
        assert!(text.contains("addr.path=/tmp/passt_3.socket"), "{text}");
        assert!(text.contains("-netdev stream,id=net0,server=off,addr.type=unix"));
        assert!(text.contains("qrap 5 qemu-system-x86_64 ... -net socket,fd=5"));
    }

    #[test]
    fn fd_must_be_a_stream_socket() {
        let e = inherited_socket(987_654).unwrap_err();
        assert!(e.starts_with("--fd 987654: "), "{e}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = inherited_socket(file.as_raw_fd()).unwrap_err();
        assert_eq!(e, format!("--fd {}: not a socket", file.as_raw_fd()));
    }
}
