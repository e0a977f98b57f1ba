//! The spawned command's process, from the parent's side: releasing it, waiting for it,
//! signalling it, the terminal's foreground, and which signals it handles.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::spawn::{recv_record, stage, CHILD_TIMEOUT};
use super::NsError;

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

/// The spawned command's process.
#[derive(Debug)]
pub struct Child {
    pub(super) pid: libc::pid_t,
    pub(super) pidfd: Option<OwnedFd>,
    /// Our end of the control socket; `None` once released.
    pub(super) control: Option<OwnedFd>,
    pub(super) command: String,
    pub(super) status: Option<ChildExit>,
    /// The command took the terminal's foreground from us.
    pub(super) took_terminal: bool,
}

pub(super) fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
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
    /// worked. On [`NsError::Exec`] the child has exited with [`super::EXEC_FAILED_CODE`] (reap it
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

/// Whether our standard input is a terminal whose foreground process group is ours: then the
/// command takes the foreground, and [`Child::give_back_terminal`] takes it back. Not
/// when we run in the background (`pasta ... &`), or without a terminal.
pub(super) fn terminal_is_ours() -> bool {
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
        let mut buf = Vec::new();
        crate::procnet::read_whole(&self.0, &mut buf).ok()?;
        SignalDisposition::from_status(&String::from_utf8_lossy(&buf), signal)
    }
}
