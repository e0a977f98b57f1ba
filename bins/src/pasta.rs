//! pasta's life: find or make the namespaces, put a tap device in the network namespace,
//! configure it, then run the data path until the command ends, the namespace goes away, or a
//! signal says stop (for a command, see `crate::shutdown`: it is passed on, and pasta waits a
//! while for the command to end).
//!
//! Order matters. The command's process is forked first, before any thread exists. pasta then
//! joins the user namespace owning the target network namespace (for capabilities over it;
//! only a single-threaded process may), and works inside the network namespace only from
//! short-lived threads: pasta itself stays in the host's network namespace, where its host
//! sockets live. Signals are blocked (for the signalfd) before the command is released or
//! anyone hears we're ready; the command clears its mask before it starts.

use std::os::fd::{AsFd, BorrowedFd};

use os_shim::bypass::Bypass;
use os_shim::isolation::Identity;
use os_shim::ns::{self, Child, NetnsWatch, NsTarget};
use os_shim::reactor::{monotonic_now, Reactor};
use os_shim::sockets::Sockets;
use os_shim::{hostinfo, nsconf, tap::Tap};
use sans_io::config::{Config, Mode};
use sans_io::engine::{Engine, EngineOptions};
use sans_io::fwd::forwards::Forwards;
use sans_io::wire::offload::L4Checksum;
use sans_io::wire::FrameQueue;

use crate::autofwd::AutoForward;
use crate::capture::CaptureLink;
use crate::cli::{Cli, PastaTarget};
use crate::control::ControlServer;
use crate::datapath::{self, Exit, GuestLink, LinkStats, Watch};
use crate::shutdown::{CommandPid, CommandShutdown, ExitAtOnce, StopSignals, SIGNAL_GRACE};
use crate::{forwards, process, sandbox, EXIT_FAILURE};

/// The tap device as the data path's guest link.
struct TapLink(Tap);

impl GuestLink for TapLink {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<datapath::ReadFrame> {
        self.0.read_frame(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.0.write_frame(frame)
    }

    /// Runs of datagrams go in one write each; see [`Tap::write_queue`].
    fn write_frames(&mut self, frames: &FrameQueue) -> usize {
        self.0.write_queue(frames)
    }

    fn summary(&self) -> Option<String> {
        Some(TapLink::summary(self))
    }

    /// Datagrams leave their checksum to the kernel (which, delivering them in the
    /// namespace, never computes it); TCP segments go complete, which measured faster (see
    /// `sans_io::wire::offload`).
    fn l4_checksum(&self) -> L4Checksum {
        L4Checksum::PartialUdp
    }
}

impl TapLink {
    /// What the tap carried, for the log at the end.
    fn summary(&self) -> String {
        let s = self.0.stats();
        format!(
            "tap: {} frames written one by one, {} in {} segmented writes{}; {} TCP segments \
             read whole from the namespace's segmentation offload, {} UDP runs{}",
            s.frames,
            s.run_frames,
            s.runs,
            if s.runs_refused {
                " (the kernel refused them: none since)"
            } else {
                ""
            },
            s.segments_in,
            s.udp_runs_in,
            if s.uso_offered {
                ""
            } else {
                " (the kernel takes no UDP segmentation from the namespace)"
            }
        )
    }
}

/// The spawned command: when it ends, pasta ends with its status.
struct CommandWatch<'a>(&'a mut Child);

impl Watch for CommandWatch<'_> {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.0.pidfd()
    }

    fn check(&mut self) -> Option<i32> {
        self.0.try_wait().ok().flatten().map(|exit| exit.code())
    }
}

/// The namespace file: when it's deleted, pasta ends (successfully: that's how Podman stops it).
struct NetnsGone(NetnsWatch, std::path::PathBuf);

impl Watch for NetnsGone {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.0.fd()
    }

    fn check(&mut self) -> Option<i32> {
        let gone = if self.0.fd().is_some() {
            self.0.gone()
        } else {
            self.0.check()
        };
        if gone {
            log::info!("namespace {} is gone, exiting", self.1.display());
        }
        gone.then_some(0)
    }
}

/// Signals that end pasta (forwarded to the command, if there is one) and passt.
pub(crate) const STOP_SIGNALS: [nix::sys::signal::Signal; 4] = [
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGQUIT,
    nix::sys::signal::Signal::SIGHUP,
];

/// Runs pasta; returns the process exit status.
pub fn run(cli: &Cli, config: Config, identity: Option<Identity>) -> i32 {
    match run_inner(cli, config, identity) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pasta: {e}");
            e.exit_code()
        }
    }
}

/// A start-up failure, with the exit status it calls for.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Ns(#[from] ns::NsError),
    #[error(transparent)]
    Tap(#[from] os_shim::tap::TapError),
    #[error("configuring the namespace: {0}")]
    NsConf(#[from] nsconf::NsConfError),
    #[error("{0}")]
    Other(String),
}

impl StartError {
    fn exit_code(&self) -> i32 {
        match self {
            // Like a shell: a command that cannot be run is 127.
            StartError::Ns(ns::NsError::Exec { .. }) => ns::EXEC_FAILED_CODE,
            _ => EXIT_FAILURE,
        }
    }
}

fn run_inner(cli: &Cli, config: Config, identity: Option<Identity>) -> Result<i32, StartError> {
    let (target, mut child, warnings) = match &cli.target {
        PastaTarget::Spawn(command) => {
            // The command gets a user namespace (unless --netns-only), as with the C pasta,
            // root or not, and pasta joins it: that gives us the capabilities over the
            // namespaces, and a root-started pasta a place to be who it becomes (mapped
            // there too) and still signal its command (see `sandbox`).
            let also = identity.map(|i| (i.uid, i.gid));
            let spawned = ns::spawn_mapping(command, cli.netns_only, also)?;
            (spawned.ns, Some(spawned.child), spawned.warnings)
        }
        PastaTarget::Pid(pid) => (
            NsTarget::from_pid(*pid, cli.userns.as_deref(), cli.netns_only)?,
            None,
            Vec::new(),
        ),
        PastaTarget::Netns(path) => (
            NsTarget::from_path(path, cli.userns.as_deref())?,
            None,
            Vec::new(),
        ),
    };
    for w in &warnings {
        eprintln!("pasta: warning: {w}");
    }
    // The command is forked (with what the user gave us): the rest of isolation's first stage.
    sandbox::limit_startup(Mode::Pasta)
        .map_err(|e| StartError::Other(format!("cannot isolate: {e}")))?;
    // The user namespace owning the target: unprivileged, our capabilities over the target
    // are there, so join it now. A root-started pasta has them already; it joins its
    // command's user namespace only before isolating, where it then becomes nobody (mapped
    // there for it), because binding the host's low ports (-t 80) needs root out here.
    let join_late = identity.is_some() && child.is_some();
    if let (Some(userns), false) = (&target.userns, join_late) {
        ns::join_userns(userns)?;
    }

    // The control socket: its path must be bound before the filesystem goes away.
    let mut control = match &cli.conf_path {
        Some(path) => Some(ControlServer::bind(path).map_err(StartError::Other)?),
        None => None,
    };

    let tap = Tap::open_in(&target.netns, &config.ns_ifname)?;
    let conf = nsconf::configure(&target.netns, tap.ifindex(), &config, cli.config_net)?;
    for w in &conf.warnings {
        eprintln!("pasta: warning: {w}");
    }

    // The namespace file: only when the target is a path of its own (not a spawned command,
    // whose namespace lives as long as pasta does).
    let mut netns_watch = match (&cli.target, cli.no_netns_quit) {
        (PastaTarget::Spawn(_), _) | (_, true) => None,
        _ => Some(NetnsGone(
            NetnsWatch::new(&target.netns_path)?,
            target.netns_path.clone(),
        )),
    };

    // The loopback bypass: -T and -U listeners on the namespace's loopback, relayed to the
    // host's; local -t and -u traffic relayed into the namespace.
    let netns = target
        .netns
        .try_clone()
        .map_err(|e| StartError::Other(format!("cannot keep the namespace: {e}")))?;
    let mut sockets = Sockets::new();
    sockets.set_bypass(Bypass::new(netns));

    // Forwarded ports listen in pasta's own namespace (the host's) and, for -T and -U, in
    // the target's, before the command runs or whoever started us hears we're ready.
    let mut engine = engine_for(config).map_err(StartError::Other)?;
    forwards::listen_at_start(&mut engine, &mut sockets);

    // `auto`: what the namespace has bound already is forwarded before we say we're ready.
    let mut auto = AutoForward::new(engine.config(), &target.netns)?;
    if let Some(auto) = auto.as_mut() {
        auto.update(&mut engine, &mut sockets);
    }

    // Signals are blocked once the reactor exists (they wait in its signalfd for the loop).
    let new_reactor = || {
        Reactor::new(&STOP_SIGNALS)
            .map_err(|e| StartError::Other(format!("cannot set up the event loop: {e}")))
    };
    let reactor = match &mut child {
        Some(child) => {
            // Before the command runs: a signal as soon as it does is handled, not fatal.
            // The command starts with a clean mask all the same (`ns::spawn`).
            let reactor = new_reactor()?;
            process::write_pid_file(cli.pid_file.as_deref(), std::process::id())
                .map_err(StartError::Other)?;
            child.release()?;
            reactor
        }
        None if !cli.foreground => {
            // Ready: the foreground process exits successfully (Podman waits for exactly
            // that), the daemon carries on. Its reactor comes after the fork: epoll hears a
            // signalfd only for the process that registered it.
            process::daemonize(cli.pid_file.as_deref()).map_err(StartError::Other)?;
            new_reactor()?
        }
        None => {
            process::write_pid_file(cli.pid_file.as_deref(), std::process::id())
                .map_err(StartError::Other)?;
            new_reactor()?
        }
    };

    let mut tap_link = TapLink(tap);
    let mut capture = match &cli.pcap {
        Some(path) => Some(CaptureLink::create(&mut tap_link, path).map_err(|e| {
            StartError::Other(format!("cannot open capture file {}: {e}", path.display()))
        })?),
        None => None,
    };
    let link: &mut dyn GuestLink = match capture.as_mut() {
        Some(c) => c,
        None => &mut tap_link,
    };

    let mut stop: Box<dyn StopSignals> = match &child {
        Some(child) => {
            let command = CommandPid {
                pid: child.pid(),
                status: ns::ProcStatus::open(child.pid()).ok(),
            };
            Box::new(CommandShutdown::new(command, SIGNAL_GRACE))
        }
        None => Box::new(ExitAtOnce),
    };
    // Everything with a path is open (the tap, the capture, the log, the PID file, the
    // namespace's socket tables and watch). From here on pasta is who it runs as, on an empty
    // filesystem, with its allow-list of system calls; sockets it needs inside the namespace
    // later come from a thread that stays there.
    if let (Some(userns), true) = (&target.userns, join_late) {
        ns::join_userns(userns)?;
    }
    // The bypass makes sockets in the namespace after start-up for local -t/-u traffic, for
    // -T/-U auto, and for -T/-U rules the control socket adds: from a thread that stays there.
    let needs_thread = engine.config().splice
        || control.is_some()
        || auto.as_ref().is_some_and(AutoForward::listens_in_namespace);
    let agent = match sockets.bypass_mut() {
        Some(bypass) if needs_thread => Some(bypass.keep_a_namespace_thread()?),
        _ => None,
    };
    sandbox::pasta_before_loop(identity, agent, child.is_some())
        .map_err(|e| StartError::Other(format!("cannot isolate: {e}")))?;
    sandbox::lock_down(Mode::Pasta)
        .map_err(|e| StartError::Other(format!("cannot isolate: {e}")))?;
    let mut stats = LinkStats::default();
    let exit = {
        let mut command = child.as_mut().map(CommandWatch);
        let mut watches: Vec<&mut dyn Watch> = Vec::new();
        if let Some(c) = command.as_mut() {
            watches.push(c);
        }
        if let Some(w) = netns_watch.as_mut() {
            watches.push(w);
        }
        let extras = datapath::Extras {
            watches: &mut watches,
            auto: auto.as_mut(),
            control: control.as_mut(),
            stop: stop.as_mut(),
        };
        datapath::run(
            &mut engine,
            link,
            &reactor,
            &mut sockets,
            extras,
            &mut stats,
        )
    };
    if let Some(summary) = link.summary() {
        let cut = stats.cut;
        log::debug!(
            "{summary}; {} runs cut into {} datagrams, {} that could not be cut dropped",
            cut.runs,
            cut.datagrams,
            cut.dropped
        );
    }
    log::debug!("{}", datapath::host_sockets_summary(sockets.stats()));
    // The PID file stays: Podman reads it after we exit, to wait for that PID to be gone (the
    // C pasta leaves it too).

    let code = match exit {
        Exit::Done(code) => code,
        Exit::Signal(sig) => match child.as_mut() {
            Some(child) => end_command(child, sig),
            None => 0,
        },
        Exit::LinkError(e) => {
            eprintln!("pasta: {e}");
            EXIT_FAILURE
        }
    };
    if let Some(child) = child.as_mut() {
        child.give_back_terminal();
    }
    Ok(code)
}

/// pasta stops for signal `sig` before its command ended (see `crate::shutdown`): the
/// command ends too, with everything in its PID namespace. The status is the command's if it
/// ended meanwhile, else 128 + `sig`, as if the signal had ended it.
fn end_command(child: &mut Child, sig: i32) -> i32 {
    if let Ok(Some(exit)) = child.try_wait() {
        return exit.code();
    }
    let _ = child.signal(libc::SIGKILL);
    match child.wait_timeout(std::time::Duration::from_secs(5)) {
        Ok(Some(_)) => {}
        _ => log::warn!("the command (PID {}) did not end when killed", child.pid()),
    }
    128 + sig
}

/// The engine for `config` (passt's too), its forwarding tables the command line's with the
/// host's ephemeral ports left to `all`; an error when they make too many rules.
pub(crate) fn engine_for(config: Config) -> Result<Engine, String> {
    let ephemeral = hostinfo::ephemeral_port_range();
    if let (_, Some(e)) = Forwards::from_config(&config, ephemeral.clone()) {
        return Err(format!("port forwarding: {e}"));
    }
    let options = EngineOptions {
        ephemeral,
        ..EngineOptions::default()
    };
    Ok(Engine::with_options(
        config,
        process::random_seed(),
        monotonic_now(),
        options,
    ))
}
