//! Spawning the command: new namespaces and a child held back in them, set up by the child
//! itself (ID maps, `/proc`, `ping_group_range`) and reporting each stage over a socket.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netlink::errno_text;

use super::child::{pidfd_open, terminal_is_ours, Child};
use super::{open_ns, NsError, NsKind, NsTarget};

/// How long [`spawn`] waits for the child to set its namespaces up, and [`Child::release`]
/// for the command's `execve()` to succeed or fail.
pub(super) const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

/// The child's exit code when `execve()` failed, like a shell's "command not found".
pub const EXEC_FAILED_CODE: i32 = 127;

/// The child's exit code when it could not create its namespaces, or was never released.
const CHILD_ABORT_CODE: i32 = 125;

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

/// One message from the child: a stage and an errno (0 for [`stage::READY`]).
pub(super) mod stage {
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
/// is killed if pasta dies first (`PR_SET_PDEATHSIG`). Being PID 1, it only receives the
/// signals it has a handler for (see [`super::ProcStatus::signal_disposition`] for how pasta
/// deals with that). A fresh `/proc` is mounted over the old one in the new
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
pub(super) fn recv_record(
    fd: BorrowedFd<'_>,
    deadline: Instant,
) -> Result<Option<(u32, i32)>, NsError> {
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
