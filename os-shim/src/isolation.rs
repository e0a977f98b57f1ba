//! Self-isolation: what passt or pasta could still reach if a frame from the guest took it
//! over, taken away step by step as start-up stops needing it, in the C original's four stages
//! (see DESIGN.md, "Isolation"):
//!
//! 1. [`close_inherited_fds`], [`no_core_dumps`], [`limit_bounding_set`] and
//!    [`limit_capabilities`], at start: inherited descriptors, core dumps, capabilities no
//!    later step needs;
//! 2. [`switch_identity`], [`own_user_namespace`], once the user and namespaces are known:
//!    the final UID and GID, passt's own user namespace, and (with [`detach_ipc_uts`]) IPC and
//!    UTS namespaces of our own; [`not_dumpable`] then;
//! 3. [`empty_root`], once everything that needs a path is open: a mount namespace whose root
//!    is an empty, read-only tmpfs;
//! 4. [`crate::seccomp`], before the main loop: no new privileges, an allow-list of system
//!    calls.
//!
//! Capabilities, the root directory and the IPC/UTS/mount namespaces belong to a thread, not to
//! the process: a thread pasta keeps in the target network namespace goes through the
//! per-thread steps itself (see [`crate::ns_agent`]).

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use caps::{CapSet, CapsHashSet};

pub use caps::Capability;

/// A user and group to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Why isolating failed. Each names the step, so that the one line the user sees says what
/// could not be taken away.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("invalid --runas {spec}: {why}")]
    RunAs { spec: String, why: String },
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        source: io::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> IsolationError {
    move |source| IsolationError::Step { step, source }
}

fn check(rc: libc::c_int, what: &'static str) -> Result<(), IsolationError> {
    if rc < 0 {
        return Err(step(what)(io::Error::last_os_error()));
    }
    Ok(())
}

// --- Who to run as ---

/// The identity to switch to: `--runas` if given, else `nobody` when started as root (of the
/// whole machine: root inside a user namespace that maps only some IDs stays as it is), else
/// none: stay who we are. Looked up now, while `/etc/passwd` is still there.
pub fn identity_for(runas: Option<&str>) -> Result<Option<Identity>, IsolationError> {
    if let Some(spec) = runas {
        return parse_runas(spec, &SystemUsers).map(Some);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !root_of_everything() {
        return Ok(None);
    }
    Ok(Some(
        SystemUsers
            .user("nobody")
            .map(|(uid, gid)| Identity { uid, gid })
            // The usual value where the user database has no `nobody`.
            .unwrap_or(Identity {
                uid: 65534,
                gid: 65534,
            }),
    ))
}

/// Whether our user namespace maps the whole ID range onto itself: the initial one.
fn root_of_everything() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|map| {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        })
        .unwrap_or(true)
}

/// Where names are looked up (the system's database, or a test's).
pub trait UserDb {
    /// A login's UID and primary GID.
    fn user(&self, name: &str) -> Option<(u32, u32)>;
    fn group(&self, name: &str) -> Option<u32>;
}

/// The system's user and group database (getpwnam_r, getgrnam_r).
pub struct SystemUsers;

impl UserDb for SystemUsers {
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    }

    fn group(&self, name: &str) -> Option<u32> {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}

/// `UID`, `UID:GID`, `LOGIN` or `LOGIN:GROUP`, as the man page says: a numeric UID alone
/// takes the same number as GID, a login its primary group. Switching to root is refused (it
/// would isolate nothing).
pub fn parse_runas(spec: &str, db: &dyn UserDb) -> Result<Identity, IsolationError> {
    let fail = |why: &str| IsolationError::RunAs {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(fail("empty user or group"));
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => db.user(user).ok_or_else(|| fail("no such user"))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => db.group(g).ok_or_else(|| fail("no such group"))?,
        },
    };
    if uid == 0 {
        return Err(fail("running as root isolates nothing"));
    }
    Ok(Identity { uid, gid })
}

// --- Stage 1: at start ---

/// Closes every descriptor from 3 up except those in `keep` (named on the command line:
/// `--fd`, qrap's), so that nothing our parent left open by mistake is reachable from here.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), IsolationError> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 3;
    for &fd in &keep {
        let fd = fd as u32;
        if fd > from {
            close_range(from, fd - 1)?;
        }
        from = fd + 1;
    }
    close_range(from, u32::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), IsolationError> {
    // SAFETY: closes descriptors; the caller made sure none in the range is in use.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.9: one by one, as far as our limit goes.
    let mut rl = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let limit = rl.rlim_cur.min(u64::from(u32::MAX)) as u32;
    for fd in first..=last.min(limit) {
        // SAFETY: as above.
        unsafe { libc::close(fd as RawFd) };
    }
    Ok(())
}

/// No core dumps: a dump would hold guest traffic.
pub fn no_core_dumps() -> Result<(), IsolationError> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system call with a valid struct.
    check(
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) },
        "limiting core dumps",
    )
}

/// Raises the descriptor limit (`RLIMIT_NOFILE`) to its hard limit, as the C original does:
/// every connection holds a descriptor or two (four through the splicer), and a shell's
/// usual soft limit of 1024 would cap them near a thousand where the hard limit allows far
/// more. Any process may do this. Returns the limits before and after, soft and hard.
pub fn raise_descriptor_limit() -> Result<(u64, u64), IsolationError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct.
    check(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        "reading the descriptor limit",
    )?;
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: plain system call with a valid struct.
        check(
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) },
            "raising the descriptor limit",
        )?;
    }
    Ok((before, limit.rlim_cur))
}

/// Drops from the bounding set every capability but `keep`: none of them can ever come back,
/// not even through an executable's file capabilities. Without CAP_SETPCAP (an ordinary user)
/// there is nothing to drop from: the bounding set is then left as it is.
pub fn limit_bounding_set(keep: &[Capability]) {
    for cap in caps::all() {
        if !keep.contains(&cap) {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
}

// --- Stage 2: identity and namespaces ---

/// Switches the whole process (every thread) to `id`, clearing supplementary groups. Only
/// root or a holder of CAP_SETUID/CAP_SETGID can; switching to who we already are is fine.
pub fn switch_identity(id: Identity) -> Result<(), IsolationError> {
    switch_identity_keeping(id, false)
}

/// [`switch_identity`]; with `keep_caps`, the calling thread's capabilities, effective ones
/// included, survive the switch untouched, for [`limit_capabilities`] to pick from.
///
/// Untouched, not merely kept permitted (PR_SET_KEEPCAPS, which still clears the effective
/// set): a root-started pasta signals its command through CAP_KILL, and so does the kernel on
/// its behalf should pasta be killed (the command's parent-death signal is checked against
/// pasta's credentials). A moment without CAP_KILL in effect between the switch and
/// [`limit_capabilities`] was a moment in which killing pasta left its command running.
/// Without CAP_SETPCAP to set the securebit that asks for this, PR_SET_KEEPCAPS it is.
pub fn switch_identity_keeping(id: Identity, keep_caps: bool) -> Result<(), IsolationError> {
    if !keep_caps {
        return switch_ids(id);
    }
    // SAFETY: plain system calls on the calling thread's own securebits.
    let before = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    let no_fixup = before >= 0
        && unsafe {
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                (before | libc::SECBIT_NO_SETUID_FIXUP) as libc::c_ulong,
                0,
                0,
                0,
            )
        } == 0;
    if !no_fixup {
        // SAFETY: plain system call.
        check(
            unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) },
            "keeping capabilities across the switch",
        )?;
    }
    let switched = switch_ids(id);
    // SAFETY: plain system calls; the capabilities that allowed setting the bit are all still
    // there to clear it.
    unsafe {
        if no_fixup {
            libc::prctl(libc::PR_SET_SECUREBITS, before as libc::c_ulong, 0, 0, 0);
        } else {
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        }
    }
    switched
}

fn switch_ids(id: Identity) -> Result<(), IsolationError> {
    // SAFETY: plain system calls; glibc applies them to every thread.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            let e = io::Error::last_os_error();
            // Without CAP_SETGID there are no groups we could have added either.
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(step("clearing supplementary groups")(e));
            }
        }
        check(libc::setgid(id.gid), "switching group")?;
        check(libc::setuid(id.uid), "switching user")?;
    }
    Ok(())
}

/// passt's own user namespace, in which it is root with no power outside: the mount, IPC and
/// UTS namespaces of the next steps are then ours to make. `id` is who we are outside.
/// Single-threaded callers only (the kernel refuses otherwise).
pub fn own_user_namespace(id: Identity) -> Result<(), IsolationError> {
    // Switching identity made us non-dumpable, which hands /proc/self to root: writable
    // again until the maps are written ([`not_dumpable`] comes after).
    // SAFETY: plain system calls.
    check(
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) },
        "making /proc/self ours",
    )?;
    check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER) },
        "creating a user namespace",
    )?;
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(step("mapping IDs in the user namespace"))
    };
    write("/proc/self/uid_map", format!("0 {} 1", id.uid))?;
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/gid_map", format!("0 {} 1", id.gid))?;
    Ok(())
}

/// IPC and UTS namespaces of the calling thread's own: nothing of the host's System V IPC or
/// host name is reachable. Needs CAP_SYS_ADMIN in the current user namespace.
pub fn detach_ipc_uts() -> Result<(), IsolationError> {
    // SAFETY: plain system call.
    check(
        unsafe { libc::unshare(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) },
        "detaching IPC and UTS namespaces",
    )
}

/// Other processes of the same user can no longer ptrace us or read our memory through
/// /proc, and /proc/self is root's: after this, writing our own ID maps fails, so it comes
/// once they are written (and once nothing needs another process's /proc files: joining the
/// spawned command's user namespace, say).
pub fn not_dumpable() -> Result<(), IsolationError> {
    // SAFETY: plain system call.
    check(
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "making the process non-dumpable",
    )
}

/// Keeps at most `keep` in the calling thread's permitted and effective sets (inheritable and
/// ambient cleared): what a thread still needs in its user namespace from now on.
pub fn limit_capabilities(keep: &[Capability]) -> Result<(), IsolationError> {
    let fail =
        |e: caps::errors::CapsError| step("dropping capabilities")(io::Error::other(e.to_string()));
    // Only what we have can be kept: asking for more would fail.
    let permitted = caps::read(None, CapSet::Permitted).map_err(fail)?;
    let set: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    caps::clear(None, CapSet::Ambient).map_err(fail)?;
    caps::clear(None, CapSet::Inheritable).map_err(fail)?;
    caps::set(None, CapSet::Effective, &set).map_err(fail)?;
    caps::set(None, CapSet::Permitted, &set).map_err(fail)?;
    Ok(())
}

// --- Stage 3: an empty filesystem ---

/// Moves the calling thread to a mount namespace of its own whose root is an empty tmpfs,
/// read-only, with no device, executable or set-user-ID files: the host's filesystem is gone
/// for good (the old root is detached, not just hidden). Needs CAP_SYS_ADMIN in the current
/// user namespace; everything that needs a path must be open by now.
pub fn empty_root() -> Result<(), IsolationError> {
    // SAFETY: plain system calls with valid C strings; this thread's mounts only (CLONE_NEWNS
    // gives it a namespace of its own first).
    unsafe {
        check(
            libc::unshare(libc::CLONE_NEWNS),
            "creating a mount namespace",
        )?;
        // Nothing we do below may propagate back to the namespace we came from.
        let root = c"/";
        check(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        )?;
        // Any directory serves as the mount point: the tmpfs is mounted over it in our own
        // namespace only.
        let point = if std::path::Path::new("/tmp").is_dir() {
            c"/tmp"
        } else {
            c"/"
        };
        let opts = c"nr_inodes=2,nr_blocks=0,mode=0555";
        check(
            libc::mount(
                c"passt".as_ptr(),
                point.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_RDONLY,
                opts.as_ptr().cast(),
            ),
            "mounting an empty tmpfs",
        )?;
        check(libc::chdir(point.as_ptr()), "entering the empty tmpfs")?;
        // pivot_root(".", "."): the tmpfs becomes the root, the old root is stacked on it...
        let dot = c".";
        check(
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int,
            "pivot_root into the empty tmpfs",
        )?;
        // ...and detached, which leaves nothing but the tmpfs.
        check(
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW),
            "detaching the old root",
        )?;
        check(libc::chdir(root.as_ptr()), "entering the new root")?;
    }
    Ok(())
}

// --- What a process looks like from outside, for tests and --debug ---

/// The isolation-relevant lines of /proc/PID/status (Uid, Gid, CapEff, NoNewPrivs, Seccomp).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub cap_eff: Option<u64>,
    pub no_new_privs: Option<u32>,
    pub seccomp: Option<u32>,
}

impl Status {
    /// Parses the text of /proc/PID/status.
    pub fn parse(text: &str) -> Status {
        let mut s = Status::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let first = value.split_whitespace().next().unwrap_or("");
            match key {
                "Uid" => s.uid = first.parse().ok(),
                "Gid" => s.gid = first.parse().ok(),
                "CapEff" => s.cap_eff = u64::from_str_radix(first, 16).ok(),
                "NoNewPrivs" => s.no_new_privs = first.parse().ok(),
                "Seccomp" => s.seccomp = first.parse().ok(),
                _ => {}
            }
        }
        s
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uid {:?} gid {:?} CapEff {:#x} NoNewPrivs {:?} Seccomp {:?}",
            self.uid,
            self.gid,
            self.cap_eff.unwrap_or(0),
            self.no_new_privs,
            self.seccomp
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Db;
    impl UserDb for Db {
        fn user(&self, name: &str) -> Option<(u32, u32)> {
            match name {
                "alice" => Some((1000, 100)),
                "root" => Some((0, 0)),
                _ => None,
            }
        }
        fn group(&self, name: &str) -> Option<u32> {
            (name == "staff").then_some(50)
        }
    }

    fn id(uid: u32, gid: u32) -> Identity {
        Identity { uid, gid }
    }

    #[test]
    fn runas_takes_numbers_and_names() {
        assert_eq!(parse_runas("1234", &Db).unwrap(), id(1234, 1234));
        assert_eq!(parse_runas("1234:99", &Db).unwrap(), id(1234, 99));
        assert_eq!(parse_runas("alice", &Db).unwrap(), id(1000, 100));
        assert_eq!(parse_runas("alice:staff", &Db).unwrap(), id(1000, 50));
        assert_eq!(parse_runas("alice:7", &Db).unwrap(), id(1000, 7));
        assert_eq!(parse_runas("1234:staff", &Db).unwrap(), id(1234, 50));
    }

    #[test]
    fn runas_refuses_unknown_names_root_and_empty_parts() {
        for (spec, why) in [
            ("bob", "no such user"),
            ("alice:wheel", "no such group"),
            ("root", "running as root isolates nothing"),
            ("0:5", "running as root isolates nothing"),
            (":5", "empty user or group"),
            ("alice:", "empty user or group"),
        ] {
            let e = parse_runas(spec, &Db).unwrap_err().to_string();
            assert_eq!(e, format!("invalid --runas {spec}: {why}"));
        }
    }

    /// The calling thread's effective capabilities, by raw `capget` (fork-safe: no allocation).
    fn effective_caps() -> u64 {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: header and two data words, as version 3 wants.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(r, 0);
        u64::from(data[0].effective) | (u64::from(data[1].effective) << 32)
    }

    /// In a forked child (the switch is the whole process's), root switches to nobody keeping
    /// or not: kept, CAP_KILL is in effect right after the switch, with no gap for
    /// [`limit_capabilities`] to close (a root-started pasta killed in such a gap left its
    /// command running: the kernel's parent-death signal needs CAP_KILL); not kept, nothing is.
    #[test]
    fn kept_capabilities_stay_in_effect_through_the_switch() {
        // SAFETY: plain system call.
        if unsafe { libc::geteuid() } != 0 {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "needs root under CI"
            );
            eprintln!("\n*** SKIPPED: switching identity needs root ***\n");
            return;
        }
        let nobody = id(65534, 65534);
        let kill = Capability::CAP_KILL.bitmask();
        for keep in [true, false] {
            // SAFETY: the child makes system calls only, and exits.
            match unsafe { libc::fork() } {
                -1 => panic!("fork: {}", io::Error::last_os_error()),
                0 => {
                    // SAFETY: plain system call.
                    let bits = || unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
                    let before = bits();
                    let code = match switch_identity_keeping(nobody, keep) {
                        Err(_) => 3,
                        // SAFETY: plain system call.
                        Ok(()) if unsafe { libc::geteuid() } != 65534 => 4,
                        Ok(()) if bits() != before => 5,
                        Ok(()) if (effective_caps() & kill != 0) != keep => 6,
                        Ok(()) => 0,
                    };
                    // SAFETY: ends the child.
                    unsafe { libc::_exit(code) }
                }
                child => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    assert!(
                        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                        "keeping {keep}: status {status:#x} (3 failed, 4 not switched, \
                         5 securebits left changed, 6 CAP_KILL in effect: {})",
                        !keep
                    );
                }
            }
        }
    }

    /// In a forked child (limits are the whole process's): a soft limit below the hard one
    /// goes up to it, and one at it stays.
    #[test]
    fn the_descriptor_limit_goes_up_to_the_hard_one() {
        // SAFETY: the child makes system calls only, and exits.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => {
                let set = |soft, hard| {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    // SAFETY: plain system call with a valid struct.
                    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }
                };
                let soft = || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    // SAFETY: getrlimit writes the struct.
                    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
                    limit.rlim_cur
                };
                let code = if set(64, 200) != 0 {
                    3
                } else if !matches!(raise_descriptor_limit(), Ok((64, 200))) || soft() != 200 {
                    4
                } else if !matches!(raise_descriptor_limit(), Ok((200, 200))) || soft() != 200 {
                    5
                } else {
                    0
                };
                // SAFETY: ends the child.
                unsafe { libc::_exit(code) }
            }
            child => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "status {status:#x} (3 couldn't lower, 4 not raised, 5 changed at the hard \
                     limit)"
                );
            }
        }
    }

    #[test]
    fn status_lines_are_read() {
        let text =
            "Name:\tpasst\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                    CapEff:\t0000000000200400\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        let s = Status::parse(text);
        assert_eq!(s.uid, Some(65534));
        assert_eq!(s.cap_eff, Some(0x200400));
        assert_eq!(s.no_new_privs, Some(1));
        assert_eq!(s.seccomp, Some(2));
    }
}
