//! Stage 4 of self-isolation: the system calls each program's main loop may make, as a
//! seccomp allow-list (built with `seccompiler`). Anything else kills the process at once:
//! a silent EPERM would leave flows half-done and hide the bug.
//!
//! The lists are what the main loops make, found by running the test suite under strace
//! (`scripts/seccomp-audit`, which also names listed calls it never saw), grouped by why they
//! are there. Start-up is done when the filter goes on: nothing here opens a path, creates a
//! namespace or changes identity.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Which allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// passt with a qemu stream socket.
    Passt,
    /// pasta: passt's, and the tap device, splicing, the command's end, the namespace thread.
    Pasta,
}

/// One allowed call: its name (for the audit and the docs) and number on this architecture.
type Call = (&'static str, libc::c_long);

macro_rules! calls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

/// Both programs: the event loop, the guest link, host sockets, time, memory, the log.
const COMMON: &[Call] = calls![
    // The event loop: epoll, its timer, the signalfd (read), exiting.
    SYS_epoll_pwait,
    SYS_epoll_ctl,
    SYS_timerfd_settime,
    SYS_read,
    SYS_exit_group,
    SYS_exit,
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,
    // The guest link (tap device or qemu's socket) and host sockets' data.
    SYS_write,
    SYS_writev,
    SYS_readv,
    SYS_recvfrom,
    SYS_sendto,
    SYS_recvmsg,
    SYS_sendmsg,
    SYS_recvmmsg,
    SYS_sendmmsg,
    // Host sockets: opening flows, forwarded ports' connections, their options and state
    // (TIOCOUTQ and FIONREAD through ioctl).
    SYS_socket,
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept4,
    SYS_shutdown,
    SYS_getsockopt,
    SYS_setsockopt,
    SYS_getsockname,
    SYS_getpeername,
    SYS_ioctl,
    SYS_fcntl,
    SYS_close,
    // The log file kept under its size (rewritten in place), the procfs fall-back for
    // `auto`, the namespace file's watch.
    SYS_lseek,
    SYS_pread64,
    SYS_ftruncate,
    SYS_fstat,
    // Time (the vDSO serves most reads), memory, threads' synchronisation, hashing seeds.
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_madvise,
    SYS_mprotect,
    SYS_brk,
    SYS_futex,
    SYS_sched_yield,
    SYS_getrandom,
    SYS_getpid,
    SYS_gettid,
    // A panic ends with abort(): raising SIGABRT.
    SYS_tgkill,
    // Rust's runtime takes down a thread's alternate signal stack as the thread ends.
    SYS_sigaltstack,
];

/// x86_64's older forms of calls that newer architectures only have in one form.
#[cfg(target_arch = "x86_64")]
const COMMON_ARCH: &[Call] = calls![SYS_epoll_wait, SYS_newfstatat, SYS_poll, SYS_getpgrp];
#[cfg(target_arch = "aarch64")]
const COMMON_ARCH: &[Call] = calls![SYS_newfstatat];

/// pasta's own: splicing through pipes, the spawned command (its end, signals passed on),
/// the netlink socket of `auto`'s scan, the namespace thread's requests.
const PASTA: &[Call] = calls![
    SYS_splice,
    SYS_pipe2,
    SYS_kill,
    SYS_wait4,
    SYS_waitid,
    SYS_pidfd_send_signal,
    SYS_ppoll,
    // Handing the terminal back once the command is done (SIGTTOU ignored around it).
    SYS_rt_sigaction,
];

/// The allow-list for `profile` on this architecture, sorted and without duplicates.
pub fn allowed(profile: Profile) -> Vec<Call> {
    let mut list: Vec<Call> = COMMON.iter().chain(COMMON_ARCH).copied().collect();
    if profile == Profile::Pasta {
        list.extend_from_slice(PASTA);
    }
    list.sort_by_key(|c| c.1);
    list.dedup_by_key(|c| c.1);
    list
}

fn target_arch() -> io::Result<TargetArch> {
    #[cfg(target_arch = "x86_64")]
    return Ok(TargetArch::x86_64);
    #[cfg(target_arch = "aarch64")]
    return Ok(TargetArch::aarch64);
    #[allow(unreachable_code)]
    Err(io::Error::other(
        "no seccomp allow-list for this architecture",
    ))
}

/// The filter for `profile`: a call outside its list (or from another architecture's ABI)
/// kills the process.
pub fn program(profile: Profile) -> io::Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = allowed(profile)
        .iter()
        .map(|&(_, nr)| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        target_arch()?,
    )
    .map_err(|e| io::Error::other(format!("building the seccomp filter: {e}")))?;
    BpfProgram::try_from(filter)
        .map_err(|e| io::Error::other(format!("compiling the seccomp filter: {e}")))
}

/// No new privileges (no set-user-ID, no file capabilities through exec, for good), then the
/// filter on every thread of the process.
pub fn apply(profile: Profile) -> io::Result<()> {
    apply_program(&program(profile)?)
}

/// [`apply`] with a program built beforehand (a forked child must not allocate).
pub fn apply_program(prog: &BpfProgram) -> io::Result<()> {
    // SAFETY: plain system call.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    seccompiler::apply_filter_all_threads(prog)
        .map_err(|e| io::Error::other(format!("installing the seccomp filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_have_no_path_or_privilege_calls() {
        for profile in [Profile::Passt, Profile::Pasta] {
            let names: Vec<&str> = allowed(profile).iter().map(|c| c.0).collect();
            for forbidden in [
                "SYS_openat",
                "SYS_execve",
                "SYS_setns",
                "SYS_unshare",
                "SYS_mount",
                "SYS_setuid",
                "SYS_ptrace",
                "SYS_clone",
                "SYS_clone3",
            ] {
                assert!(
                    !names.contains(&forbidden),
                    "{profile:?} allows {forbidden}"
                );
            }
        }
        let passt = allowed(Profile::Passt).len();
        let pasta = allowed(Profile::Pasta).len();
        assert!(passt < pasta, "pasta's list extends passt's");
    }

    /// A call outside the list kills the process: in a forked child (the filter can't be
    /// taken off again), `openat` ends it with SIGSYS; an allowed call goes through first.
    #[test]
    fn a_call_outside_the_list_is_fatal() {
        let prog = program(Profile::Passt).unwrap();
        // SAFETY: the child only makes raw system calls and exits.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => {
                let code = match apply_program(&prog) {
                    Err(_) => 3,
                    Ok(()) => {
                        // Allowed: getpid.
                        // SAFETY: plain system calls.
                        unsafe { libc::syscall(libc::SYS_getpid) };
                        unsafe {
                            libc::syscall(
                                libc::SYS_openat,
                                libc::AT_FDCWD,
                                c"/".as_ptr(),
                                libc::O_RDONLY,
                            )
                        };
                        4
                    }
                };
                // SAFETY: ends the child.
                unsafe { libc::_exit(code) }
            }
            child => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(
                    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
                    "the child wasn't killed by SIGSYS: status {status:#x}"
                );
            }
        }
    }
}
