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

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netlink::errno_text;

/// `NS_GET_NSTYPE` (`linux/nsfs.h`, Linux 4.11): which kind of namespace an nsfs fd is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
/// How long [`spawn`] waits for the child to set its namespaces up, and [`Child::release`]
/// for the command's `execve()` to succeed or fail.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);
/// The child's exit code when `execve()` failed, like a shell's "command not found".
pub const EXEC_FAILED_CODE: i32 = 127;
/// The child's exit code when it could not create its namespaces, or was never released.
const CHILD_ABORT_CODE: i32 = 125;

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

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Exited(i32),
    Signaled(i32),
}

impl ChildExit {
    /// From a `waitpid()` status; `None` for a stopped or continued child.
    pub fn from_wait_status(status: i32) -> Option<ChildExit> {
        if libc::WIFEXITED(status) {
            Some(ChildExit::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ChildExit::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    pub fn from_std(status: std::process::ExitStatus) -> Option<ChildExit> {
        use std::os::unix::process::ExitStatusExt;
        Self::from_wait_status(status.into_raw())
    }

    /// pasta's exit code: the command's, or 128 + N when signal N killed it (like a shell).
    pub fn code(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Signaled(signal) => 128 + signal,
        }
    }
}

/// The program and `argv[0]` for an empty command: the user's shell (`$SHELL`, else
/// `/bin/sh`) as a login shell: `argv[0]` is its name prefixed with `-`.
pub fn login_shell(shell: Option<&OsStr>) -> (OsString, OsString) {
    let shell = shell
        .filter(|s| !s.is_empty())
        .unwrap_or(OsStr::new("/bin/sh"));
    let name = Path::new(shell)
        .file_name()
        .unwrap_or(shell.as_ref())
        .as_bytes();
    let mut argv0 = b"-".to_vec();
    argv0.extend_from_slice(name);
    (shell.to_owned(), OsString::from_vec(argv0))
}

/// What [`spawn`] made: the new namespaces and the child held back before `execve()`.
#[derive(Debug)]
pub struct Spawned {
    pub ns: NsTarget,
    pub child: Child,
    /// Non-fatal set-up failures in the child ("cannot set ping_group_range ...").
    pub warnings: Vec<String>,
}

/// The spawned command's process.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    /// Our end of the control socket; `None` once released.
    control: Option<OwnedFd>,
    command: String,
    status: Option<ChildExit>,
    /// The command took the terminal's foreground from us.
    took_terminal: bool,
}

/// One message from the child: a stage and an errno (0 for [`stage::READY`]).
mod stage {
    pub const SETGROUPS: u32 = 2;
    pub const UID_MAP: u32 = 3;
    pub const GID_MAP: u32 = 4;
    /// Not fatal: reported as a warning.
    pub const PING_GROUP_RANGE: u32 = 5;
    pub const READY: u32 = 6;
    pub const EXEC: u32 = 7;
    /// Not fatal: reported as a warning (the command sees the host's processes in /proc).
    pub const MOUNT_PROC: u32 = 8;
    /// The child waits for the parent to write its ID maps (more than one range: only a
    /// process with CAP_SETUID out here may).
    pub const MAPS_WANTED: u32 = 9;

    pub fn name(stage: u32) -> &'static str {
        match stage {
            SETGROUPS => "writing /proc/self/setgroups",
            UID_MAP => "writing /proc/self/uid_map",
            GID_MAP => "writing /proc/self/gid_map",
            _ => "setting up",
        }
    }
}

/// Everything the child needs, prepared before `fork()`: after it, the child only makes
/// system calls (the parent may have other threads, holding the allocator's locks).
struct ChildPlan {
    flags: libc::c_int,
    userns: bool,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// The parent writes the maps (see [`stage::MAPS_WANTED`]).
    parent_maps: bool,
    program: CString,
    /// Where execvp() looks for a command without '/': `$PATH` entries joined with it.
    candidates: Vec<CString>,
    /// Owns the strings `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    control: RawFd,
    parent_end: RawFd,
    /// The command takes the terminal's foreground (see [`terminal_is_ours`]).
    take_terminal: bool,
}

/// Creates new namespaces and a child process in them that will run `command` once
/// [`Child::release`]d; an empty `command` runs the user's login shell ([`login_shell`]).
///
/// Without `netns_only` (pasta's default, and what an unprivileged user needs) the child gets
/// a new user namespace, where it is root (uid and gid maps `0 EUID 1`, `0 EGID 1`,
/// `setgroups` denied), and new network, UTS, mount and PID namespaces owned by it. With
/// `netns_only` (needs CAP_SYS_ADMIN) the same without the user namespace.
///
/// The command is PID 1 of its PID namespace, as with the original: when it exits, the kernel
/// kills whatever it left running there, so nothing it started outlives it (and pasta); it
/// is killed if pasta dies first (`PR_SET_PDEATHSIG`). Being
/// PID 1, it only receives the signals it has a handler for (see [`signal_disposition`] for
/// how pasta deals with that). A fresh `/proc` is mounted over the old one in the new
/// mount namespace (whose mounts don't propagate back to the host's), so that `ps` shows the
/// namespace's processes; failing that is a warning. In the namespace, `ping_group_range` is
/// set to `0 0` so that the command can ping.
///
/// Returns once the namespaces exist; the child waits for [`Child::release`] (dropping the
/// [`Child`] unreleased kills it). Doesn't start threads; the caller's signal mask is cleared
/// and SIGPIPE set back to default for the command. Don't set SIGCHLD to SIG_IGN: the
/// child must stay waitable.
pub fn spawn(command: &[OsString], netns_only: bool) -> Result<Spawned, NsError> {
    spawn_mapping(command, netns_only, None)
}

/// [`spawn`], with `also` (a UID and a GID of the caller's user namespace) mapped to itself
/// in the command's user namespace besides root: who a root-started pasta becomes, so that it
/// can live in that namespace as that identity (and signal its command from there). Writing
/// such a map takes CAP_SETUID and CAP_SETGID.
pub fn spawn_mapping(
    command: &[OsString],
    netns_only: bool,
    also: Option<(u32, u32)>,
) -> Result<Spawned, NsError> {
    let (program, argv): (OsString, Vec<OsString>) = match command {
        [] => {
            let shell = std::env::var_os("SHELL");
            let (program, argv0) = login_shell(shell.as_deref());
            (program, vec![argv0])
        }
        [first, ..] => (first.clone(), command.to_vec()),
    };
    let cstring = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| {
            NsError::Invalid(format!(
                "command argument '{}' contains a NUL byte",
                s.to_string_lossy()
            ))
        })
    };
    let display = program.to_string_lossy().into_owned();
    if program.is_empty() {
        return Err(NsError::Invalid("empty command name".into()));
    }
    let program = cstring(&program)?;
    let argv = argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = path_candidates(program.as_bytes());
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    let mut fds = [0; 2];
    // SAFETY: fds has room for two.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(NsError::sys("socketpair()")(io::Error::last_os_error()));
    }
    // SAFETY: just created, ours.
    let (parent_end, child_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: getters without side effects.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // All namespaces at clone(): a new PID namespace only takes children made after it, and
    // an unprivileged process can make one only together with a new user namespace.
    let mut flags =
        libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    if !netns_only {
        flags |= libc::CLONE_NEWUSER;
    }
    let plan = ChildPlan {
        flags,
        userns: !netns_only,
        uid_map: id_map(uid, also.map(|a| a.0)),
        gid_map: id_map(gid, also.map(|a| a.1)),
        parent_maps: id_map(uid, also.map(|a| a.0)) != id_map(uid, None)
            || id_map(gid, also.map(|a| a.1)) != id_map(gid, None),
        program,
        candidates,
        _argv: argv,
        argv_ptrs,
        control: child_end.as_raw_fd(),
        parent_end: parent_end.as_raw_fd(),
        take_terminal: terminal_is_ours(),
    };

    // fork() with namespaces: clone() without a new stack carries on like fork() in both
    // processes. SAFETY: the child runs only async-signal-safe system calls on memory
    // prepared above, and never returns (see `child_main`); we are single-threaded (see above).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (plan.flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as libc::pid_t;
    if pid < 0 {
        return Err(NsError::Setup {
            what: "clone()",
            errno: errno(),
        });
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { child_main(&plan) }
    }
    drop(child_end);
    // From here on, dropping `child` kills and reaps it.
    let child = Child {
        pid,
        pidfd: pidfd_open(pid),
        control: Some(parent_end),
        command: display,
        status: None,
        took_terminal: plan.take_terminal,
    };

    let mut warnings = Vec::new();
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let control = child.control.as_ref().expect("not released").as_fd();
        match recv_record(control, deadline)? {
            Some((stage::READY, _)) => break,
            Some((stage::MAPS_WANTED, _)) => {
                write_child_maps(pid, &plan)?;
                // SAFETY: one byte to our own socket.
                let sent = unsafe { libc::send(control.as_raw_fd(), [1u8].as_ptr().cast(), 1, 0) };
                if sent != 1 {
                    return Err(NsError::ChildGone {
                        what: "waiting for its ID maps",
                    });
                }
            }
            Some((stage::PING_GROUP_RANGE, errno)) => warnings.push(format!(
                "cannot set ping_group_range in the namespace, ping may fail: {}",
                errno_text(errno)
            )),
            Some((stage::MOUNT_PROC, errno)) => warnings.push(format!(
                "cannot mount /proc for the command's PID namespace, it shows the host's \
                 processes: {}",
                errno_text(errno)
            )),
            Some((stage, errno)) => {
                return Err(NsError::Setup {
                    what: stage::name(stage),
                    errno,
                })
            }
            None => {
                return Err(NsError::ChildGone {
                    what: "creating its namespaces",
                })
            }
        }
    }

    let proc_path = |ns: &str| PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
    let netns_path = proc_path("net");
    let netns = open_ns(&netns_path, NsKind::Net)?;
    let userns = if netns_only {
        None
    } else {
        Some(open_ns(&proc_path("user"), NsKind::User)?)
    };
    Ok(Spawned {
        ns: NsTarget {
            netns,
            userns,
            netns_path,
        },
        child,
        warnings,
    })
}

/// The child's ID maps, written by us (see [`stage::MAPS_WANTED`]).
fn write_child_maps(pid: libc::pid_t, plan: &ChildPlan) -> Result<(), NsError> {
    for (file, data, what) in [
        ("setgroups", &b"deny"[..], stage::SETGROUPS),
        ("uid_map", &plan.uid_map[..], stage::UID_MAP),
        ("gid_map", &plan.gid_map[..], stage::GID_MAP),
    ] {
        std::fs::write(format!("/proc/{pid}/{file}"), data).map_err(|e| NsError::Setup {
            what: stage::name(what),
            errno: e.raw_os_error().unwrap_or(0),
        })?;
    }
    Ok(())
}

/// `0 OWN 1`, and `ALSO ALSO 1` unless that is the same ID.
fn id_map(own: u32, also: Option<u32>) -> Vec<u8> {
    match also {
        Some(a) if a != own && a != 0 => format!("0 {own} 1\n{a} {a} 1\n"),
        _ => format!("0 {own} 1"),
    }
    .into_bytes()
}

/// Whether our standard input is a terminal whose foreground process group is ours: then the
/// command takes the foreground, and [`Child::give_back_terminal`] takes it back. Not
/// when we run in the background (`pasta ... &`), or without a terminal.
fn terminal_is_ours() -> bool {
    // SAFETY: plain queries.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

/// Puts our process group back in the terminal's foreground (see [`Child::give_back_terminal`]).
fn reclaim_terminal() {
    // SAFETY: plain calls; SIGTTOU, which a background process asking gets, is ignored
    // around the request and restored after.
    unsafe {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        libc::signal(libc::SIGTTOU, old);
    }
}

/// The files `execvp()` tries for `program`: none if it has a '/', else each `$PATH`
/// directory (glibc's default when unset) joined with it.
fn path_candidates(program: &[u8]) -> Vec<CString> {
    if program.contains(&b'/') {
        return Vec::new();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    path.as_bytes()
        .split(|&b| b == b':')
        .filter_map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(program);
            CString::new(full).ok()
        })
        .collect()
}

/// The child, between `fork()` and `execve()`: system calls only.
///
/// # Safety
///
/// Only in the child of `fork()`, with `plan` prepared by the parent.
unsafe fn child_main(plan: &ChildPlan) -> ! {
    let fd = plan.control;
    libc::close(plan.parent_end);
    // Without pasta the command has no network: should pasta die without ending it (SIGKILL),
    // the command and its namespace end too.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);

    if plan.userns && plan.parent_maps {
        send_record(fd, stage::MAPS_WANTED, 0);
        wait_for_parent(fd);
    } else if plan.userns {
        // Missing before Linux 3.19, where gid_map needs no such thing.
        if write_file(c"/proc/self/setgroups", b"deny") != 0 && errno() != libc::ENOENT {
            child_fail(fd, stage::SETGROUPS);
        }
        if write_file(c"/proc/self/uid_map", &plan.uid_map) != 0 {
            child_fail(fd, stage::UID_MAP);
        }
        if write_file(c"/proc/self/gid_map", &plan.gid_map) != 0 {
            child_fail(fd, stage::GID_MAP);
        }
    }
    if mount_proc() != 0 {
        send_record(fd, stage::MOUNT_PROC, errno());
    }
    if write_file(c"/proc/sys/net/ipv4/ping_group_range", b"0 0") != 0 {
        send_record(fd, stage::PING_GROUP_RANGE, errno());
    }
    send_record(fd, stage::READY, 0);

    // Wait for the go-ahead.
    wait_for_parent(fd);

    if plan.take_terminal {
        // The terminal's Ctrl-C, Ctrl-\\ and the like are for the command, as for a job a
        // shell starts: a process group of its own, in the terminal's foreground. pasta,
        // left in the background, keeps forwarding while an interactive shell in the
        // namespace catches Ctrl-C. (SIGTTOU: we are not in the foreground while we ask.)
        libc::setpgid(0, 0);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        libc::signal(libc::SIGTTOU, libc::SIG_DFL);
    }

    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    libc::sigemptyset(set.as_mut_ptr());
    libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);

    libc::execvp(plan.program.as_ptr(), plan.argv_ptrs.as_ptr());
    // `fd` is close-on-exec: had execvp() succeeded, the parent would read end of file.
    let mut err = errno();
    // execvp() says EACCES when a $PATH directory can't be searched (/root/bin for nobody),
    // even if the command is nowhere: call that "not found", as a shell would.
    if err == libc::EACCES
        && !plan.candidates.is_empty()
        && !plan
            .candidates
            .iter()
            .any(|c| libc::access(c.as_ptr(), libc::F_OK) == 0)
    {
        err = libc::ENOENT;
    }
    send_record(fd, stage::EXEC, err);
    libc::_exit(EXEC_FAILED_CODE);
}

/// In the child: waits for one byte from the parent; end of file (the parent is gone or gave
/// up on us) ends the child.
///
/// # Safety
///
/// Only in the child of `fork()`: system calls only.
unsafe fn wait_for_parent(fd: RawFd) {
    let mut byte = 0u8;
    loop {
        let n = libc::recv(fd, (&mut byte as *mut u8).cast(), 1, 0);
        if n == 1 {
            return;
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        libc::_exit(CHILD_ABORT_CODE);
    }
}

unsafe fn child_fail(fd: RawFd, stage: u32) -> ! {
    send_record(fd, stage, errno());
    libc::_exit(CHILD_ABORT_CODE);
}

/// A procfs of the child's PID namespace over `/proc`, in its own mount namespace: first
/// made a slave of the host's, so that nothing mounted here propagates back. 0 on success, -1
/// with errno set otherwise.
unsafe fn mount_proc() -> i32 {
    let none = std::ptr::null();
    if libc::mount(
        none,
        c"/".as_ptr(),
        none,
        libc::MS_REC | libc::MS_SLAVE,
        std::ptr::null(),
    ) != 0
    {
        return -1;
    }
    libc::mount(
        c"proc".as_ptr(),
        c"/proc".as_ptr(),
        c"proc".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    )
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes `data` to `path` in one `write()`; 0 on success, -1 with errno set otherwise.
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> i32 {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return -1;
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    let saved = errno();
    libc::close(fd);
    if n != data.len() as isize {
        if n >= 0 {
            *libc::__errno_location() = libc::EIO;
        } else {
            *libc::__errno_location() = saved;
        }
        return -1;
    }
    0
}

unsafe fn send_record(fd: RawFd, stage: u32, errno: i32) {
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&stage.to_ne_bytes());
    rec[4..].copy_from_slice(&errno.to_ne_bytes());
    libc::send(fd, rec.as_ptr().cast(), rec.len(), libc::MSG_NOSIGNAL);
}

/// One record from the child, `None` at end of file; bounded by `deadline`.
fn recv_record(fd: BorrowedFd<'_>, deadline: Instant) -> Result<Option<(u32, i32)>, NsError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NsError::sys("poll() on the child's socket")(e));
        }
        if n == 0 {
            return Err(NsError::Timeout {
                what: "waiting for the child",
                after: CHILD_TIMEOUT,
            });
        }
        let mut rec = [0u8; 8];
        // SAFETY: rec has room for 8 bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), rec.as_mut_ptr().cast(), rec.len(), 0) };
        match n {
            8 => {
                let stage = u32::from_ne_bytes(rec[..4].try_into().expect("4 bytes"));
                let errno = i32::from_ne_bytes(rec[4..].try_into().expect("4 bytes"));
                return Ok(Some((stage, errno)));
            }
            0 => return Ok(None),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // ECONNRESET and the like: the child is gone.
                return Ok(None);
            }
            _ => return Err(NsError::Invalid("short message from the child".into())),
        }
    }
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: plain system call; the fd returned (close-on-exec) is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new fd, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Child {
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// A pidfd (Linux 5.3) for epoll: readable once the child has exited; then call
    /// [`Child::try_wait`]. `None` on older kernels: use SIGCHLD or a timer instead.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Lets the child `execve()` the command, and waits (at most 10 s) to learn whether that
    /// worked. On [`NsError::Exec`] the child has exited with [`EXEC_FAILED_CODE`] (reap it
    /// with [`Child::try_wait`]). Calling it again does nothing.
    pub fn release(&mut self) -> Result<(), NsError> {
        let Some(control) = self.control.take() else {
            return Ok(());
        };
        let byte = 1u8;
        loop {
            // SAFETY: sends one byte from a valid buffer; MSG_NOSIGNAL: no SIGPIPE.
            let n = unsafe {
                libc::send(
                    control.as_raw_fd(),
                    (&byte as *const u8).cast(),
                    1,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n == 1 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NsError::ChildGone {
                what: "it could run the command",
            });
        }
        match recv_record(control.as_fd(), Instant::now() + CHILD_TIMEOUT)? {
            None => Ok(()),
            Some((stage::EXEC, errno)) => Err(NsError::Exec {
                command: self.command.clone(),
                errno,
            }),
            Some((stage, errno)) => Err(NsError::Invalid(format!(
                "unexpected message {stage}/{errno} from the child"
            ))),
        }
    }

    /// Whether the child was released.
    pub fn released(&self) -> bool {
        self.control.is_none()
    }

    /// Reaps the child if it has exited (`waitpid(WNOHANG)`); the result is kept, so calling
    /// it again returns it again.
    /// After the command ended: if it had taken the terminal's foreground from us, we take
    /// it back, so that what pasta still says goes out and the shell that started us finds
    /// the terminal as it left it.
    pub fn give_back_terminal(&mut self) {
        if std::mem::take(&mut self.took_terminal) {
            reclaim_terminal();
        }
    }

    pub fn try_wait(&mut self) -> Result<Option<ChildExit>, NsError> {
        self.wait_with(libc::WNOHANG)
    }

    /// Waits for the child to exit, at most `timeout`; `Ok(None)` if it hasn't.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ChildExit>, NsError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let step = left.min(Duration::from_millis(20));
            match &self.pidfd {
                Some(fd) => {
                    let mut pfd = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, step.as_millis().max(1) as i32) };
                }
                None => std::thread::sleep(step),
            }
        }
    }

    /// Waits for the child to exit, without a bound.
    pub fn wait(&mut self) -> Result<ChildExit, NsError> {
        loop {
            if let Some(exit) = self.wait_with(0)? {
                return Ok(exit);
            }
        }
    }

    fn wait_with(&mut self, flags: libc::c_int) -> Result<Option<ChildExit>, NsError> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut status = 0;
        // SAFETY: plain system call on our own child.
        let n = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(NsError::sys("waitpid()")(e));
        }
        if n == 0 {
            return Ok(None);
        }
        self.status = ChildExit::from_wait_status(status);
        Ok(self.status)
    }

    /// Sends `signal` to the child (through its pidfd when there is one); ESRCH once reaped.
    pub fn signal(&self, signal: libc::c_int) -> Result<(), NsError> {
        if self.status.is_some() {
            return Err(NsError::sys("signalling the child")(
                io::Error::from_raw_os_error(libc::ESRCH),
            ));
        }
        // SAFETY: plain system calls.
        let rc = match &self.pidfd {
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) as libc::c_int
            },
            None => unsafe { libc::kill(self.pid, signal) },
        };
        if rc != 0 {
            return Err(NsError::sys("signalling the child")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// What a process does with a signal, as `/proc/PID/status` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalDisposition {
    /// The default action: for PID 1 of a PID namespace, the signal is simply dropped.
    Default,
    Ignored,
    Caught,
}

impl SignalDisposition {
    /// From the `SigIgn` and `SigCgt` masks of a `/proc/PID/status` text.
    pub fn from_status(status: &str, signal: libc::c_int) -> Option<SignalDisposition> {
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        let bit = 1u64.checked_shl(u32::try_from(signal - 1).ok()?)?;
        if mask("SigCgt:")? & bit != 0 {
            Some(SignalDisposition::Caught)
        } else if mask("SigIgn:")? & bit != 0 {
            Some(SignalDisposition::Ignored)
        } else {
            Some(SignalDisposition::Default)
        }
    }
}

/// What process `pid` does with `signal` now; `None` if that can't be read (it is gone).
pub fn signal_disposition(pid: libc::pid_t, signal: libc::c_int) -> Option<SignalDisposition> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    SignalDisposition::from_status(&status, signal)
}

/// A process's /proc/PID/status, opened once: it can be read again after our filesystem is
/// gone (pasta's sandbox), for as long as the process lives.
#[derive(Debug)]
pub struct ProcStatus(std::fs::File);

impl ProcStatus {
    pub fn open(pid: libc::pid_t) -> io::Result<ProcStatus> {
        std::fs::File::open(format!("/proc/{pid}/status")).map(ProcStatus)
    }

    /// What the process does with `signal` now; `None` if that can't be read (it is gone).
    pub fn signal_disposition(&self, signal: libc::c_int) -> Option<SignalDisposition> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match self.0.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(_) => return None,
            }
        }
        SignalDisposition::from_status(&String::from_utf8_lossy(&buf[..len]), signal)
    }
}

impl Drop for Child {
    /// An unreleased child is killed and reaped. A released one is left alone: waiting for it
    /// is the caller's business.
    fn drop(&mut self) {
        if self.control.take().is_some() && self.status.is_none() {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Watches a network namespace bound to the filesystem, so that pasta can quit when it is
/// deleted (`ip netns del`, Podman).
///
/// Where the directory holding it supports inotify (`/run/netns`, `/run/user/UID/netns`),
/// [`NetnsWatch::fd`] is an inotify descriptor for epoll: when readable, call
/// [`NetnsWatch::gone`]. On procfs (`/proc/PID/ns/net`, which inotify can't watch) `fd()` is
/// `None`: call [`NetnsWatch::check`] every second instead. Both compare what the path names
/// with the namespace it named at the start, through a descriptor of its directory, so they
/// keep working after pasta changes its root.
#[derive(Debug)]
pub struct NetnsWatch {
    path: PathBuf,
    dir: OwnedFd,
    name: CString,
    /// (st_dev, st_ino) of the namespace when the watch started.
    id: (u64, u64),
    inotify: Option<OwnedFd>,
}

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

impl NetnsWatch {
    pub fn new(path: &Path) -> Result<NetnsWatch, NsError> {
        let open_err = |p: &Path| {
            let p = p.to_owned();
            move |source| NsError::Open { path: p, source }
        };
        let name = path
            .file_name()
            .ok_or_else(|| NsError::Invalid(format!("{}: no file name", path.display())))?;
        let name = CString::new(name.as_bytes())
            .map_err(|_| NsError::Invalid(format!("{}: NUL in path", path.display())))?;
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let cdir = CString::new(dir_path.as_os_str().as_bytes())
            .map_err(|_| NsError::Invalid(format!("{}: NUL in path", path.display())))?;
        // SAFETY: valid C string; the fd is ours.
        let dir = unsafe {
            libc::open(
                cdir.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dir < 0 {
            return Err(open_err(&dir_path)(io::Error::last_os_error()));
        }
        // SAFETY: just opened.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        let id = stat_at(dir.as_fd(), &name).map_err(open_err(path))?;

        let mut fs = MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: fs is written on success.
        let fs_type = if unsafe { libc::fstatfs(dir.as_raw_fd(), fs.as_mut_ptr()) } == 0 {
            // SAFETY: fstatfs() succeeded.
            // f_type is a word of a different type on some architectures.
            #[allow(clippy::unnecessary_cast)]
            Some(unsafe { fs.assume_init() }.f_type as i64)
        } else {
            None
        };
        let inotify = match fs_type {
            Some(PROC_SUPER_MAGIC | SYSFS_MAGIC | DEVPTS_SUPER_MAGIC) | None => None,
            Some(_) => inotify_watch(&cdir),
        };
        Ok(NetnsWatch {
            path: path.to_owned(),
            dir,
            name,
            id,
            inotify,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The inotify descriptor to add to epoll (readable: call [`NetnsWatch::gone`]); `None`
    /// when the path can't be watched: call [`NetnsWatch::check`] on a 1 s timer.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|fd| fd.as_fd())
    }

    /// Reads the pending inotify events; `true` if one concerned our file (or the directory)
    /// and the namespace is indeed gone. Never blocks.
    pub fn gone(&mut self) -> bool {
        let Some(fd) = &self.inotify else {
            return self.check();
        };
        let mut relevant = false;
        // Aligned for struct inotify_event.
        let mut buf = [0u64; 512];
        loop {
            // SAFETY: reads into our buffer.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n <= 0 {
                break;
            }
            // SAFETY: the kernel wrote n bytes of events.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            relevant |= events_concern(bytes, self.name.as_bytes());
        }
        relevant && self.check()
    }

    /// Whether the namespace is gone: the path no longer exists, or names another file than
    /// at the start. Permission errors (a procfs entry pasta may no longer look at) count as
    /// still there, as in the original.
    pub fn check(&self) -> bool {
        match stat_at(self.dir.as_fd(), &self.name) {
            Ok(id) => id != self.id,
            Err(e) => !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
        }
    }
}

fn stat_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<(u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dir fd and C string; st written on success.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat() succeeded.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

fn inotify_watch(dir: &CString) -> Option<OwnedFd> {
    // SAFETY: plain system calls; the fd is ours.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mask =
            libc::IN_DELETE | libc::IN_DELETE_SELF | libc::IN_MOVED_FROM | libc::IN_MOVE_SELF;
        if libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), mask) < 0 {
            return None;
        }
        Some(fd)
    }
}

/// Whether a buffer of `struct inotify_event`s concerns the file `name` or the directory.
fn events_concern(mut bytes: &[u8], name: &[u8]) -> bool {
    const HEADER: usize = 16;
    let mut relevant = false;
    while bytes.len() >= HEADER {
        let mask = u32::from_ne_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let len = u32::from_ne_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        let Some(raw) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        let event_name = raw.split(|&b| b == 0).next().unwrap_or_default();
        let whole_dir = libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_IGNORED
            | libc::IN_Q_OVERFLOW
            | libc::IN_UNMOUNT;
        if mask & whole_dir != 0 || event_name == name {
            relevant = true;
        }
        bytes = &bytes[HEADER + len..];
    }
    relevant
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_shell_names() {
        let (p, a) = login_shell(Some(OsStr::new("/usr/bin/zsh")));
        assert_eq!(
            (p.as_os_str(), a.as_os_str()),
            (OsStr::new("/usr/bin/zsh"), OsStr::new("-zsh"))
        );
        let (p, a) = login_shell(None);
        assert_eq!(
            (p.as_os_str(), a.as_os_str()),
            (OsStr::new("/bin/sh"), OsStr::new("-sh"))
        );
        let (p, _) = login_shell(Some(OsStr::new("")));
        assert_eq!(p, "/bin/sh");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            ChildExit::from_wait_status(7 << 8),
            Some(ChildExit::Exited(7))
        );
        assert_eq!(
            ChildExit::from_wait_status(15),
            Some(ChildExit::Signaled(15))
        );
        assert_eq!(ChildExit::Signaled(15).code(), 143);
        assert_eq!(ChildExit::Exited(0).code(), 0);
        // Stopped by SIGSTOP: not an exit.
        assert_eq!(ChildExit::from_wait_status((19 << 8) | 0x7f), None);
    }

    #[test]
    fn signal_dispositions_from_proc_status() {
        // SIGTERM (15) ignored, SIGINT (2) and SIGCHLD (17) caught, SIGHUP (1) default.
        let status = "Name:\tsh\nSigBlk:\t0000000000000000\n\
                      SigIgn:\t0000000000004000\nSigCgt:\t0000000000010002\n";
        let d = |sig| SignalDisposition::from_status(status, sig);
        assert_eq!(d(libc::SIGTERM), Some(SignalDisposition::Ignored));
        assert_eq!(d(libc::SIGINT), Some(SignalDisposition::Caught));
        assert_eq!(d(libc::SIGCHLD), Some(SignalDisposition::Caught));
        assert_eq!(d(libc::SIGHUP), Some(SignalDisposition::Default));
        // Garbage: no answer, no panic.
        assert_eq!(SignalDisposition::from_status("SigIgn:\tzz\n", 1), None);
        assert_eq!(SignalDisposition::from_status(status, 0), None);
        assert_eq!(SignalDisposition::from_status(status, 99), None);
    }

    fn event(mask: u32, name: &[u8]) -> Vec<u8> {
        let len = if name.is_empty() {
            0
        } else {
            (name.len() + 1).div_ceil(16) * 16
        };
        let mut out = Vec::new();
        out.extend_from_slice(&1i32.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        let mut padded = name.to_vec();
        padded.resize(len, 0);
        out.extend_from_slice(&padded);
        out
    }

    #[test]
    fn inotify_events() {
        let other = event(libc::IN_DELETE, b"other");
        let ours = event(libc::IN_DELETE, b"pasta-ns");
        assert!(!events_concern(&other, b"pasta-ns"));
        assert!(events_concern(&[other.clone(), ours].concat(), b"pasta-ns"));
        assert!(events_concern(
            &event(libc::IN_DELETE_SELF, b""),
            b"pasta-ns"
        ));
        // A prefix of our name is another file.
        assert!(!events_concern(
            &event(libc::IN_DELETE, b"pasta"),
            b"pasta-ns"
        ));
        // Truncated buffer: no panic.
        assert!(!events_concern(&other[..20], b"other"));
    }

    #[test]
    fn open_ns_checks_the_kind() {
        let err = open_ns(Path::new("/proc/self/ns/user"), NsKind::Net).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/proc/self/ns/user is not a network namespace (it is a user namespace)"
        );
        let err = open_ns(Path::new("/proc/self/status"), NsKind::Net).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/proc/self/status is not a network namespace"
        );
        let err = open_ns(Path::new("/nonexistent/ns"), NsKind::Net).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot open /nonexistent/ns: No such file or directory"
        );
        open_ns(Path::new("/proc/self/ns/net"), NsKind::Net).unwrap();
    }
}
