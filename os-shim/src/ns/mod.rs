//! pasta's namespaces: find or create the target, run the command in it, work inside it.
//!
//! pasta itself stays in the init network namespace (its host-side sockets live there) and
//! works inside the target network namespace from short-lived threads. The order of calls:
//!
//! 1. Target: [`NsTarget::from_pid`], [`NsTarget::from_path`], or [`spawn`] (new namespaces
//!    and a child, held back, that will run the command in them).
//! 2. [`join_userns`] with the target's user namespace, if it has one, **while the process is
//!    still single-threaded** (the kernel refuses `setns(CLONE_NEWUSER)` to a multi-threaded
//!    process): this gives pasta the capabilities it needs over the target network namespace
//!    without moving it out of the init network namespace. It is a no-op when the target's
//!    user namespace is the one pasta is in (a `unshare -n` process, root's `ip netns`).
//! 3. Anything in the namespace through [`in_netns`]: a thread that enters it, runs a closure
//!    and ends. Sockets and devices opened there stay in that namespace (the tap with
//!    [`crate::tap::Tap::open_in`], the configuration with [`crate::nsconf::configure`]).
//! 4. [`Child::release`]: the command starts; then wait for it with [`Child::pidfd`] (for
//!    epoll) and [`Child::try_wait`], and exit with [`ChildExit::code`].
//! 5. For a namespace bound to the filesystem, [`NetnsWatch`] says when it is deleted.

mod child;
mod spawn;
#[cfg(test)]
mod tests;
mod watch;

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netlink::errno_text;

pub use child::{Child, ChildExit, ProcStatus, SignalDisposition};
pub use spawn::{login_shell, spawn, spawn_mapping, Spawned, EXEC_FAILED_CODE};
pub use watch::NetnsWatch;

/// `NS_GET_NSTYPE` (`linux/nsfs.h`, Linux 4.11): which kind of namespace an nsfs fd is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// `strerror()` text of an I/O error, without Rust's "(os error N)".
fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => errno_text(errno),
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot open {}: {}", path.display(), io_text(source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The path is not a namespace file, or not one of the kind expected.
    #[error("{} is not a {expected} namespace{}", path.display(),
            found.map(|f| format!(" (it is a {f} namespace)")).unwrap_or_default())]
    WrongKind {
        path: PathBuf,
        expected: &'static str,
        found: Option<&'static str>,
    },
    #[error("cannot join the target user namespace: {}{}", io_text(source),
            if source.raw_os_error() == Some(libc::EINVAL) {
                " (join_userns() must be called before any thread is started)"
            } else { "" })]
    JoinUserns {
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the target network namespace: {}", io_text(source))]
    EnterNetns {
        #[source]
        source: io::Error,
    },
    /// The child could not create or set up its namespaces.
    #[error("cannot create namespaces: {what}: {}{}", errno_text(*errno),
            if *errno == libc::EPERM || *errno == libc::ENOSPC {
                " (are user namespaces enabled? see /proc/sys/user/max_user_namespaces)"
            } else { "" })]
    Setup { what: &'static str, errno: i32 },
    /// `execve()` of the command failed: pasta reports it and exits with
    /// [`EXEC_FAILED_CODE`] (the child already exited with it).
    #[error("cannot run {command}: {}", errno_text(*errno))]
    Exec { command: String, errno: i32 },
    #[error("{what}: {}", io_text(source))]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}: no answer from the child within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("the child process exited before {what}")]
    ChildGone { what: &'static str },
    #[error("{0}")]
    Invalid(String),
}

impl NsError {
    /// For `map_err`: a system call failed while doing `what`.
    pub fn sys(what: &'static str) -> impl FnOnce(io::Error) -> NsError {
        move |source| NsError::Sys { what, source }
    }
}

/// A kind of namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    Net,
    User,
}

impl NsKind {
    fn clone_flag(self) -> libc::c_int {
        match self {
            NsKind::Net => libc::CLONE_NEWNET,
            NsKind::User => libc::CLONE_NEWUSER,
        }
    }

    fn name(self) -> &'static str {
        match self {
            NsKind::Net => "network",
            NsKind::User => "user",
        }
    }
}

fn kind_name(flag: libc::c_int) -> &'static str {
    match flag {
        libc::CLONE_NEWNET => "network",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWPID => "PID",
        libc::CLONE_NEWUTS => "UTS",
        libc::CLONE_NEWIPC => "IPC",
        libc::CLONE_NEWCGROUP => "cgroup",
        0x80 => "time",
        _ => "unknown",
    }
}

/// Opens a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`, ...) close-on-exec and
/// checks it is a namespace of `kind`.
pub fn open_ns(path: &Path, kind: NsKind) -> Result<OwnedFd, NsError> {
    let open_err = |source| NsError::Open {
        path: path.to_owned(),
        source,
    };
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| open_err(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: a valid C string; the fd returned is ours.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(open_err(io::Error::last_os_error()));
    }
    // SAFETY: just opened, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: NS_GET_NSTYPE takes no argument.
    let found = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if found < 0 {
        return Err(NsError::WrongKind {
            path: path.to_owned(),
            expected: kind.name(),
            found: None,
        });
    }
    if found != kind.clone_flag() {
        return Err(NsError::WrongKind {
            path: path.to_owned(),
            expected: kind.name(),
            found: Some(kind_name(found)),
        });
    }
    Ok(fd)
}

/// The inode number of a namespace: the number in `net:[4026532178]`, for messages and for
/// telling namespaces apart.
pub fn ns_ino(fd: impl AsFd) -> Result<u64, NsError> {
    Ok(fstat(fd.as_fd())
        .map_err(NsError::sys("fstat() on a namespace"))?
        .1)
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is written by the kernel on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat() succeeded.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// The namespaces pasta attaches to: a network namespace, and the user namespace that owns it
/// when pasta must join it to get capabilities over it.
#[derive(Debug)]
pub struct NsTarget {
    pub netns: OwnedFd,
    /// `None`: don't join any (`--netns-only`, or a `--netns` path without `--userns`).
    pub userns: Option<OwnedFd>,
    /// Where the network namespace was opened from (`/proc/PID/ns/net` for a PID or a spawned
    /// command): for messages and for [`NetnsWatch`].
    pub netns_path: PathBuf,
}

impl NsTarget {
    /// `pasta [--userns PATH] PID`: the network namespace of process `pid`, and the user
    /// namespace at `userns`, else (unless `netns_only`) the process's own.
    pub fn from_pid(pid: u32, userns: Option<&Path>, netns_only: bool) -> Result<Self, NsError> {
        let proc_path = |ns: &str| PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
        let netns_path = proc_path("net");
        let netns = open_ns(&netns_path, NsKind::Net)?;
        let userns = match userns {
            Some(path) => Some(open_ns(path, NsKind::User)?),
            None if netns_only => None,
            None => Some(open_ns(&proc_path("user"), NsKind::User)?),
        };
        Ok(NsTarget {
            netns,
            userns,
            netns_path,
        })
    }

    /// `pasta --netns PATH [--userns PATH]` (a name is `/run/netns/NAME`, resolved by the
    /// CLI). Without `userns`, no user namespace is joined.
    pub fn from_path(netns: &Path, userns: Option<&Path>) -> Result<Self, NsError> {
        Ok(NsTarget {
            netns: open_ns(netns, NsKind::Net)?,
            userns: userns.map(|p| open_ns(p, NsKind::User)).transpose()?,
            netns_path: netns.to_owned(),
        })
    }
}

/// Joins the user namespace `userns` (`setns(CLONE_NEWUSER)`), for the capabilities it
/// grants over the namespaces it owns; the process stays in its network namespace.
///
/// **Call it while the process has a single thread**: the kernel refuses (EINVAL) otherwise,
/// and it can't be undone. Joining the user namespace the process is already in is a no-op
/// (the kernel would refuse that too).
pub fn join_userns(userns: impl AsFd) -> Result<(), NsError> {
    let fd = userns.as_fd();
    let target = fstat(fd).map_err(|source| NsError::JoinUserns { source })?;
    if let Ok(own) = std::fs::metadata("/proc/self/ns/user") {
        use std::os::unix::fs::MetadataExt;
        if (own.dev(), own.ino()) == target {
            return Ok(());
        }
    }
    // SAFETY: plain system call on a valid fd.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        return Err(NsError::JoinUserns {
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` in the network namespace `netns`, on a short-lived thread (`setns(CLONE_NEWNET)`
/// affects the calling thread only, so the rest of the process stays where it is). Sockets and
/// devices `f` opens stay bound to that namespace after the thread ends. Unprivileged, call
/// [`join_userns`] first. A panic in `f` is propagated.
pub fn in_netns<R: Send>(netns: impl AsFd, f: impl FnOnce() -> R + Send) -> Result<R, NsError> {
    let fd = netns.as_fd();
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("pasta-netns".into())
            .spawn_scoped(scope, move || {
                // SAFETY: plain system call on a valid fd.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .map_err(NsError::sys("starting a thread for the namespace"))?;
        match handle.join() {
            Ok(result) => result.map_err(|source| NsError::EnterNetns { source }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
