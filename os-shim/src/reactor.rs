//! The event loop's kernel side: one epoll instance, a timerfd for the core's next deadline,
//! and a signalfd for the signals we handle, so that every wake-up is an epoll event.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use sans_io::time::Instant;

use crate::tokens::{TOKEN_SIGNAL, TOKEN_TIMER};

/// The current `CLOCK_MONOTONIC` reading, as the core counts time.
pub fn monotonic_now() -> Instant {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    let nanos = (ts.tv_sec() as u64).saturating_mul(1_000_000_000) + ts.tv_nsec() as u64;
    Instant::from_nanos(nanos)
}

pub struct Reactor {
    epoll: Epoll,
    timer: TimerFd,
    signals: SignalFd,
    /// What the timer is armed for, so that re-arming it for the same deadline (most
    /// wake-ups) costs no system call; `None` when disarmed or fired.
    armed: Cell<Option<Instant>>,
}

impl Reactor {
    /// Blocks `signals` for this thread (they arrive through the signalfd instead) and sets up
    /// epoll with the timer and the signalfd. Call it after forking any child that must see
    /// those signals unblocked, and before starting threads, which inherit the mask.
    pub fn new(signals: &[Signal]) -> io::Result<Reactor> {
        let mut mask = SigSet::empty();
        for &s in signals {
            mask.add(s);
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TIMER))?;
        epoll.add(&signals, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL))?;
        Ok(Reactor {
            epoll,
            timer,
            signals,
            armed: Cell::new(None),
        })
    }

    /// Watches `fd` for input (level-triggered), reported with `token`.
    pub fn watch_readable(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        debug_assert!(token < TOKEN_SIGNAL, "token {token} is reserved");
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        Ok(())
    }

    /// Another handle on the same epoll instance, for a component that registers descriptors
    /// of its own (host sockets, see `crate::sockets`), with tokens below [`TOKEN_SIGNAL`].
    pub fn epoll_handle(&self) -> io::Result<Epoll> {
        Ok(Epoll(self.epoll.0.try_clone()?))
    }

    pub fn unwatch(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd)?;
        Ok(())
    }

    /// Arms the timer for the core's next deadline (an absolute monotonic time), unless it is
    /// armed for an earlier one already (or there is none): that one then fires for nothing
    /// and the driver asks again. Each arming costs a system call (and on a virtual machine
    /// the host's work to program the timer), and deadlines that move later come with
    /// traffic (a flow's timer entry moved on as its connection closes, at every one of many
    /// short connections), while a firing for nothing comes at most once per arming.
    pub fn set_deadline(&self, at: Option<Instant>) -> io::Result<()> {
        let Some(at) = at else {
            return Ok(());
        };
        if self.armed.get().is_some_and(|armed| armed <= at) {
            return Ok(());
        }
        // Forget it first: if arming fails, the next call tries again.
        self.armed.set(None);
        // Zero would disarm the timer: a deadline already due fires after 1 ns.
        let nanos = at.as_nanos().max(1);
        let ts = TimeSpec::new(
            (nanos / 1_000_000_000) as libc::time_t,
            (nanos % 1_000_000_000) as libc::c_long,
        );
        self.timer.set(
            Expiration::OneShot(ts),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        self.armed.set(Some(at));
        Ok(())
    }

    /// Consumes a timer expiry (after a [`TOKEN_TIMER`] event).
    pub fn ack_timer(&self) {
        self.armed.set(None);
        let mut buf = [0u8; 8];
        // Nothing to read means a stale event; either way the timer is quiet afterwards.
        let _ = nix::unistd::read(self.timer.as_fd().as_raw_fd(), &mut buf);
    }

    /// The next pending signal, if any (after a [`TOKEN_SIGNAL`] event).
    pub fn next_signal(&self) -> io::Result<Option<i32>> {
        Ok(self
            .signals
            .read_signal()?
            .map(|info| info.ssi_signo as i32))
    }

    /// Waits for events, retrying when interrupted; returns how many were filled in.
    pub fn wait(&self, events: &mut [EpollEvent], timeout_ms: Option<u16>) -> io::Result<usize> {
        let timeout = timeout_ms.map_or(EpollTimeout::NONE, EpollTimeout::from);
        loop {
            match self.epoll.wait(events, timeout) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timer_fires_at_the_deadline() {
        let reactor = Reactor::new(&[]).unwrap();
        let start = monotonic_now();
        reactor
            .set_deadline(Some(start + Duration::from_millis(20)))
            .unwrap();
        let mut events = [EpollEvent::empty(); 4];
        let n = reactor.wait(&mut events, Some(5000)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(events[0].data(), TOKEN_TIMER);
        assert!(monotonic_now() - start >= Duration::from_millis(20));
        reactor.ack_timer();
        // Disarmed: nothing more within a short wait.
        reactor.set_deadline(None).unwrap();
        assert_eq!(reactor.wait(&mut events, Some(30)).unwrap(), 0);
    }

    #[test]
    fn an_earlier_arming_is_kept_and_a_later_one_replaced() {
        let reactor = Reactor::new(&[]).unwrap();
        let mut events = [EpollEvent::empty(); 4];
        let start = monotonic_now();
        // A deadline that moves later: the timer stays armed for the first, which fires.
        reactor
            .set_deadline(Some(start + Duration::from_millis(20)))
            .unwrap();
        reactor
            .set_deadline(Some(start + Duration::from_secs(60)))
            .unwrap();
        reactor.set_deadline(None).unwrap();
        assert_eq!(reactor.wait(&mut events, Some(5000)).unwrap(), 1);
        assert!(monotonic_now() - start < Duration::from_secs(4));
        reactor.ack_timer();
        // One that moves earlier: re-armed for it.
        let start = monotonic_now();
        reactor
            .set_deadline(Some(start + Duration::from_secs(60)))
            .unwrap();
        reactor
            .set_deadline(Some(start + Duration::from_millis(20)))
            .unwrap();
        assert_eq!(reactor.wait(&mut events, Some(5000)).unwrap(), 1);
        assert_eq!(events[0].data(), TOKEN_TIMER);
        assert!(monotonic_now() - start < Duration::from_secs(4));
    }

    #[test]
    fn past_deadline_fires_at_once() {
        let reactor = Reactor::new(&[]).unwrap();
        reactor.set_deadline(Some(Instant::ZERO)).unwrap();
        let mut events = [EpollEvent::empty(); 4];
        assert_eq!(reactor.wait(&mut events, Some(5000)).unwrap(), 1);
    }
}
