//! What a stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT) does to the main loop.
//!
//! passt, and pasta attached to an existing namespace, stop at once ([`ExitAtOnce`]). pasta
//! running a command ([`CommandShutdown`]) passes the signal on and keeps forwarding while the
//! command shuts down, so that it doesn't lose its network in the middle of that; pasta ends
//! with it. A second stop signal, or the command still running [`SIGNAL_GRACE`] after the
//! first, ends pasta at once (the caller then kills the command, see `pasta.rs`), saying so.
//!
//! The command is PID 1 of its own PID namespace, where the kernel drops the signals it has
//! no handler for: a command that leaves the signal at its default action would ignore it
//! and run on. There the first signal does what the default action would have done: pasta
//! stops at once (and ends the command).

use std::time::Duration;

use os_shim::ns::{ProcStatus, SignalDisposition};
use sans_io::time::Instant;

use crate::datapath::Exit;

/// How long pasta keeps forwarding for a command that got a stop signal and carries on.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(10);

/// What a stop signal does; see the module documentation.
pub trait StopSignals {
    /// A stop signal arrived at `now`: `Some(exit)` ends the loop.
    fn on_signal(&mut self, signal: i32, now: Instant) -> Option<Exit>;
    /// When [`StopSignals::on_deadline`] wants to run, if ever.
    fn deadline(&self) -> Option<Instant>;
    /// The deadline passed: `Some(exit)` ends the loop.
    fn on_deadline(&mut self, now: Instant) -> Option<Exit>;
}

/// Stop at the first signal.
pub struct ExitAtOnce;

impl StopSignals for ExitAtOnce {
    fn on_signal(&mut self, signal: i32, _now: Instant) -> Option<Exit> {
        log::info!("{}: exiting", signal_name(signal));
        Some(Exit::Signal(signal))
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn on_deadline(&mut self, _now: Instant) -> Option<Exit> {
        None
    }
}

/// The spawned command, as a shutdown needs it.
pub trait Command {
    /// Sends `signal` to the command.
    fn pass_on(&mut self, signal: i32);
    /// What the command does with `signal`, if that can be told.
    fn disposition(&self, signal: i32) -> Option<SignalDisposition>;
}

/// The spawned command by its PID: safe to signal while the main loop runs, because the
/// loop ends as soon as the command is reaped (and only then could its PID be reused). Its
/// /proc status file is opened beforehand: the sandbox takes /proc away.
pub struct CommandPid {
    pub pid: libc::pid_t,
    pub status: Option<ProcStatus>,
}

impl Command for CommandPid {
    fn pass_on(&mut self, signal: i32) {
        // SAFETY: plain system call, on our own unreaped child.
        if unsafe { libc::kill(self.pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            log::debug!("cannot pass {} on to the command: {e}", signal_name(signal));
        }
    }

    fn disposition(&self, signal: i32) -> Option<SignalDisposition> {
        self.status.as_ref()?.signal_disposition(signal)
    }
}

/// Pass the first signal on and wait (bounded) for the command to end; see the module
/// documentation.
pub struct CommandShutdown<C> {
    command: C,
    grace: Duration,
    /// The first signal, and when the grace period ends.
    first: Option<(i32, Instant)>,
}

impl<C: Command> CommandShutdown<C> {
    pub fn new(command: C, grace: Duration) -> Self {
        CommandShutdown {
            command,
            grace,
            first: None,
        }
    }
}

impl<C: Command> StopSignals for CommandShutdown<C> {
    fn on_signal(&mut self, signal: i32, now: Instant) -> Option<Exit> {
        let name = signal_name(signal);
        if let Some((first, _)) = self.first {
            log::warn!(
                "{name} after {}: exiting now, ending the command",
                signal_name(first)
            );
            return Some(Exit::Signal(signal));
        }
        let disposition = self.command.disposition(signal);
        self.command.pass_on(signal);
        if disposition == Some(SignalDisposition::Default) {
            // Dropped by the kernel (the command is PID 1): what the default would have done.
            log::debug!("{name}: the command has no handler for it: ending it");
            return Some(Exit::Signal(signal));
        }
        log::warn!(
            "{name} passed on to the command; forwarding until it exits, at most {} s (another \
             signal ends pasta at once)",
            self.grace.as_secs()
        );
        self.first = Some((signal, now + self.grace));
        None
    }

    fn deadline(&self) -> Option<Instant> {
        self.first.map(|(_, until)| until)
    }

    fn on_deadline(&mut self, now: Instant) -> Option<Exit> {
        let (signal, until) = self.first?;
        if now < until {
            return None;
        }
        log::warn!(
            "the command still runs {} s after {}: exiting now, ending it",
            self.grace.as_secs(),
            signal_name(signal)
        );
        Some(Exit::Signal(signal))
    }
}

/// "SIGTERM", or the number for a signal without a name.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct FakeCommand {
        passed: Vec<i32>,
        disposition: Option<SignalDisposition>,
    }

    impl Command for &mut FakeCommand {
        fn pass_on(&mut self, signal: i32) {
            self.passed.push(signal);
        }

        fn disposition(&self, _signal: i32) -> Option<SignalDisposition> {
            self.disposition
        }
    }

    fn at(secs: u64) -> Instant {
        Instant::from_nanos(secs * 1_000_000_000)
    }

    const TERM: i32 = libc::SIGTERM;
    const INT: i32 = libc::SIGINT;

    #[test]
    fn a_command_that_carries_on_gets_the_grace_period() {
        for disposition in [
            Some(SignalDisposition::Ignored),
            Some(SignalDisposition::Caught),
            None,
        ] {
            let mut cmd = FakeCommand {
                disposition,
                ..Default::default()
            };
            let mut s = CommandShutdown::new(&mut cmd, Duration::from_secs(10));
            assert_eq!(s.on_signal(TERM, at(100)), None);
            assert_eq!(s.deadline(), Some(at(110)));
            assert_eq!(s.on_deadline(at(109)), None);
            assert_eq!(s.on_deadline(at(110)), Some(Exit::Signal(TERM)));
            assert_eq!(cmd.passed, [TERM], "passed on once");
        }
    }

    #[test]
    fn a_second_signal_ends_at_once() {
        let mut cmd = FakeCommand {
            disposition: Some(SignalDisposition::Ignored),
            ..Default::default()
        };
        let mut s = CommandShutdown::new(&mut cmd, Duration::from_secs(10));
        assert_eq!(s.on_signal(TERM, at(1)), None);
        assert_eq!(s.on_signal(INT, at(2)), Some(Exit::Signal(INT)));
        assert_eq!(cmd.passed, [TERM]);
    }

    #[test]
    fn a_command_without_a_handler_ends_at_once() {
        let mut cmd = FakeCommand {
            disposition: Some(SignalDisposition::Default),
            ..Default::default()
        };
        let mut s = CommandShutdown::new(&mut cmd, Duration::from_secs(10));
        assert_eq!(s.on_signal(TERM, at(1)), Some(Exit::Signal(TERM)));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn without_a_command_the_first_signal_ends() {
        let mut s = ExitAtOnce;
        assert_eq!(s.on_signal(INT, at(1)), Some(Exit::Signal(INT)));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(TERM), "SIGTERM");
        assert_eq!(signal_name(1000), "signal 1000");
    }
}
