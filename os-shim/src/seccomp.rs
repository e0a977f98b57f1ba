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
    /// passt with a vhost-user front-end: passt's, and mapping the guest's memory.
    PasstVhostUser,
}

/// One allowed call: its name (for the audit and the docs) and number on this architecture.
type Call = (&'static str, libc::c_long);

macro_rules! calls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

/// Both programs: the event loop, the guest link, host sockets, the log, time, memory.
const COMMON: &[Call] = calls![
    // The event loop: epoll, its timer, the signalfd and the links (read), leaving.
    SYS_epoll_ctl,
    SYS_timerfd_settime,
    SYS_read,
    SYS_exit_group,
    // The tap device, qemu's socket (sendmsg, a batch of frames), log lines, syslog.
    SYS_write,
    SYS_sendmsg,
    // Host sockets' data: TCP peeks (recvmsg with MSG_PEEK), datagrams one by one and in
    // batches both ways, sock_diag's netlink answers.
    SYS_recvmsg,
    SYS_recvfrom,
    SYS_sendto,
    SYS_recvmmsg,
    SYS_sendmmsg,
    // Host sockets: new flows, forwarded ports' connections, their options and state
    // (TIOCOUTQ and FIONREAD, and the tap's, through ioctl), closing.
    SYS_socket,
    SYS_connect,
    SYS_bind,
    SYS_accept4,
    // Forwarding tables changed while we run (`apply_forwards`, for the control socket):
    // their new listeners, in passt too.
    SYS_listen,
    SYS_shutdown,
    SYS_getsockopt,
    SYS_setsockopt,
    SYS_getsockname,
    SYS_ioctl,
    SYS_fcntl,
    SYS_close,
    // The log file kept under its size: rewritten in place through its descriptor.
    SYS_lseek,
    SYS_ftruncate,
    // Time (the vDSO answers unless the clock source can't), memory (the allocator grows,
    // trims and protects its arenas), locks that meet contention, hash seeds.
    SYS_clock_gettime,
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_madvise,
    SYS_mprotect,
    SYS_brk,
    SYS_futex,
    SYS_sched_yield,
    SYS_getrandom,
    // A panic ends in abort(): SIGABRT raised at ourselves, so that it reads as one.
    SYS_getpid,
    SYS_gettid,
    SYS_tgkill,
    SYS_rt_sigprocmask,
    // Returning from a signal handler (Rust's stack overflow guard), and the runtime taking a
    // thread's alternate signal stack down as it ends.
    SYS_rt_sigreturn,
    SYS_sigaltstack,
];

/// The same on each architecture, where their names differ: waiting for events (passt's
/// bounded wait for a slow qemu: poll).
#[cfg(target_arch = "x86_64")]
const COMMON_ARCH: &[Call] = calls![SYS_epoll_wait, SYS_poll];
#[cfg(target_arch = "aarch64")]
const COMMON_ARCH: &[Call] = calls![SYS_epoll_pwait, SYS_ppoll];

/// pasta's own: the tap's frames and headers, splicing through pipes (-T), the datagram relay's batches (-U), the procfs
/// fall-back of `auto` forwarding's scan, the namespace thread
/// (ending it), the namespace file's watch, and the spawned command: passing signals on,
/// reaping it, waiting for it (bounded), handing the terminal back.
const PASTA: &[Call] = calls![
    // The tap's frames, each behind its virtio-net header.
    SYS_readv,
    SYS_writev,
    SYS_splice,
    SYS_pipe2,
    SYS_pread64,
    SYS_exit,
    SYS_newfstatat,
    SYS_kill,
    SYS_pidfd_send_signal,
    SYS_wait4,
    SYS_clock_nanosleep,
    SYS_rt_sigaction,
];

/// The same, where architectures differ: polling the command's pidfd, our process group.
#[cfg(target_arch = "x86_64")]
const PASTA_ARCH: &[Call] = calls![SYS_poll, SYS_getpgrp];
#[cfg(target_arch = "aarch64")]
const PASTA_ARCH: &[Call] = calls![SYS_ppoll, SYS_getpgid];

/// vhost-user's own: none beyond passt's. The protocol is recvmsg and sendmsg (with the memory
/// table's and the eventfds' descriptors), a message peeked with recvfrom and answered with
/// sendto, the guest's memory mapped and unmapped (mmap, munmap), eventfds read and written,
/// the connection polled: all on the common list. A list of its own all the same, so that what
/// vhost-user alone needs is added here, not to every program's.
const VHOST_USER: &[Call] = calls![];

/// The allow-list for `profile` on this architecture, sorted and without duplicates.
pub fn allowed(profile: Profile) -> Vec<Call> {
    let mut list: Vec<Call> = COMMON.iter().chain(COMMON_ARCH).copied().collect();
    match profile {
        Profile::Pasta => {
            list.extend_from_slice(PASTA);
            list.extend_from_slice(PASTA_ARCH);
        }
        Profile::PasstVhostUser => list.extend_from_slice(VHOST_USER),
        Profile::Passt => {}
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
        for profile in [Profile::Passt, Profile::Pasta, Profile::PasstVhostUser] {
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
