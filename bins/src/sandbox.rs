//! The isolation stages of `os_shim::isolation`, in the order each program takes them. Always
//! on: there is no option to run without.
//!
//! | stage | passt | pasta |
//! |---|---|---|
//! | 1, at start | inherited descriptors closed (but `--fd`), no core dumps, capabilities cut to what start-up needs; the descriptor limit raised to the hard one | the same, all but the first once the command is forked (it inherits none of them) |
//! | 2, identity | `--runas` or `nobody` if root; a user namespace of its own; IPC and UTS namespaces of its own | `--runas` or `nobody` if root, *after* stage 3: see below |
//! | 3, filesystem | an empty read-only root | the same, for the main thread and the namespace thread each |
//! | then | no capabilities; not dumpable | no capabilities (but CAP_KILL in its command's user namespace when started as root; the namespace thread keeps CAP_NET_BIND_SERVICE where it has it); not dumpable |
//! | 4, system calls | no new privileges; passt's allow-list | pasta's |
//!
//! Why pasta switches identity after stage 3, not before as passt does: a root-started pasta
//! serving a namespace of the machine's root (Podman's root mode) has no user namespace of its
//! own (one would own nothing of the network namespace it serves), so once it is `nobody` it
//! could no longer make the mount namespace of stage 3. Rootless pasta already works from the
//! user namespace it joined, where the order makes no difference.

use os_shim::isolation::{self, Capability, Identity, IsolationError};
use os_shim::ns_agent::NsAgent;
use os_shim::seccomp::{self, Profile};
use sans_io::config::Mode;

/// What start-up may still need, by program (the C original's choice, and root's way with
/// files): binding low ports, switching identity, namespaces and mounts, the namespace's
/// interface, the files the user names wherever they are (PID file, log, capture, a stale
/// socket of another user's to probe and replace); pasta also maps IDs in its command's user
/// namespace and opens other processes' namespace files. All of them go at the identity
/// switch, or at the latest once the main loop is near.
fn startup_capabilities(mode: Mode) -> Vec<Capability> {
    use Capability::*;
    let mut caps = vec![
        CAP_NET_BIND_SERVICE,
        CAP_SETUID,
        CAP_SETGID,
        CAP_SYS_ADMIN,
        CAP_NET_ADMIN,
        CAP_DAC_OVERRIDE,
        CAP_DAC_READ_SEARCH,
        CAP_FOWNER,
    ];
    if mode == Mode::Pasta {
        caps.extend([CAP_SETFCAP, CAP_SYS_PTRACE, CAP_KILL]);
    }
    caps
}

/// Stage 1, before anything else: closes what we inherited (keeping `keep`, the descriptors
/// the command line names); passt also does [`limit_startup`] now.
pub fn at_start(mode: Mode, keep: &[i32]) -> Result<(), IsolationError> {
    isolation::close_inherited_fds(keep)?;
    match mode {
        Mode::Passt => limit_startup(mode),
        // What pasta's command inherits is the user's business: pasta limits itself once the
        // command is forked.
        Mode::Pasta => Ok(()),
    }
}

/// The rest of stage 1: no core dumps, and capabilities cut to what start-up needs (the
/// bounding set too, so that none comes back). Also the descriptor limit raised to the hard
/// one: not isolation, but the moment is the same (pasta's command keeps the user's).
pub fn limit_startup(mode: Mode) -> Result<(), IsolationError> {
    isolation::no_core_dumps()?;
    match isolation::raise_descriptor_limit() {
        Ok((before, after)) if before != after => {
            log::debug!("descriptor limit raised from {before} to {after}");
        }
        Ok(_) => {}
        Err(e) => log::warn!("{e}: the descriptor limit stays as it is"),
    }
    let caps = startup_capabilities(mode);
    isolation::limit_bounding_set(&caps);
    isolation::limit_capabilities(&caps)
}

/// Stages 2 and 3 for passt, once everything that needs a path is open (and after going to
/// the background: forking needs /dev/null). Single-threaded.
pub fn passt_before_loop(identity: Option<Identity>) -> Result<(), IsolationError> {
    if let Some(id) = identity {
        isolation::switch_identity(id)?;
    }
    let me = Identity {
        // SAFETY: getters without side effects.
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
    };
    isolation::own_user_namespace(me)?;
    isolation::detach_ipc_uts()?;
    isolation::empty_root()?;
    isolation::limit_capabilities(&[])?;
    isolation::not_dumpable()
}

/// Stages 3 and 2 (that order: see the module documentation) for pasta and its namespace
/// thread, if it keeps one, once everything that needs a path is open.
pub fn pasta_before_loop(
    identity: Option<Identity>,
    agent: Option<&NsAgent>,
    command: bool,
) -> Result<(), IsolationError> {
    let per_thread = || -> Result<(), IsolationError> {
        isolation::detach_ipc_uts()?;
        isolation::empty_root()
    };
    per_thread()?;
    if let Some(agent) = agent {
        on_agent(agent, per_thread)?;
    }
    // Passing signals on to the command (and the kernel's SIGKILL to it should pasta die)
    // needs the right to signal it. A root-started pasta becomes someone else inside the
    // command's user namespace, where CAP_KILL reaches the command's processes and nothing
    // else; a rootless one is the command's own user and needs nothing.
    let keep: &[Capability] = match (identity, command) {
        (Some(_), true) => &[Capability::CAP_KILL],
        _ => &[],
    };
    if let Some(id) = identity {
        // Every thread: glibc passes it on.
        match isolation::switch_identity_keeping(id, !keep.is_empty()) {
            Err(IsolationError::Step { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                // Attached to a namespace of someone else's user namespace, where our
                // identity isn't mapped: we stay as we are there, with no capabilities.
                log::warn!(
                    "cannot switch to UID {} in the target's user namespace (not mapped \
                     there): running on without capabilities",
                    id.uid
                );
            }
            other => other?,
        }
    }
    isolation::limit_capabilities(keep)?;
    if let Some(agent) = agent {
        // Binding a low port for `-T auto` in a namespace whose user namespace is ours.
        let keep = || isolation::limit_capabilities(&[Capability::CAP_NET_BIND_SERVICE]);
        on_agent(agent, keep)?;
    }
    isolation::not_dumpable()
}

/// Runs an isolation step on the namespace thread (capabilities, root and namespaces are a
/// thread's own).
fn on_agent(
    agent: &NsAgent,
    step: impl FnOnce() -> Result<(), IsolationError> + Send + 'static,
) -> Result<(), IsolationError> {
    agent.run(step).map_err(|e| IsolationError::Step {
        step: "isolating the namespace thread",
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Stage 4, right before the main loop: no new privileges, and the program's allow-list of
/// system calls for every thread.
pub fn lock_down(mode: Mode) -> Result<(), IsolationError> {
    lock_down_profile(match mode {
        Mode::Passt => Profile::Passt,
        Mode::Pasta => Profile::Pasta,
    })
}

/// [`lock_down`] with the allow-list named (passt's vhost-user mode has its own).
pub fn lock_down_profile(profile: Profile) -> Result<(), IsolationError> {
    seccomp::apply(profile).map_err(|source| IsolationError::Step {
        step: "installing the seccomp filter",
        source,
    })
}
