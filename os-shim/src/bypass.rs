//! pasta's loopback bypass, both ways, as one part the driver sets up and [`crate::sockets`]
//! carries: the relays ([`Splicer`] for TCP, [`DgramRelay`] for UDP) and the way into the
//! target namespace they need to make sockets there.
//!
//! Namespace to host (`-T`, `-U`): listeners on the namespace's loopback (or the address the
//! spec gives), relayed to the host's loopback. Host to namespace (`-t`, `-u`): what a
//! forwarding socket on the host received from a loopback peer, which the core hands over
//! (`StreamSockets::hand_over`, `DgramSockets::relay_datagram`) instead of sending it through
//! the tap, relayed to a socket made inside the namespace. Neither passes through the engine.
//!
//! Sockets in the namespace are made by entering it for the call while pasta still can (start
//! -up), then by a thread that stays there ([`Bypass::keep_a_namespace_thread`]; see
//! `crate::ns_agent` for why).

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use nix::sys::epoll::EpollFlags;
use sans_io::flow::Proto;
use sans_io::time::Instant;

use crate::dgram_relay::{DgramRelay, HostSocket};
use crate::ns::NsError;
use crate::ns_agent::{InNetns, NsAgent};
use crate::ns_listeners::{Bound, NsAddrs};
use crate::reactor::Reactor;
use crate::splice::Splicer;

/// How the namespace's sockets are made.
#[derive(Debug)]
enum NsAccess {
    /// By entering it for the call (start-up, while pasta has the right to).
    Enter(OwnedFd),
    /// By the thread that stays there.
    Thread(NsAgent),
}

impl InNetns for NsAccess {
    fn run_in<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError> {
        match self {
            NsAccess::Enter(fd) => fd.run_in(f),
            NsAccess::Thread(agent) => agent.run_in(f),
        }
    }
}

/// The loopback bypass of one pasta, see the module documentation.
#[derive(Debug)]
pub struct Bypass {
    pub splicer: Splicer,
    pub dgram_relay: DgramRelay,
    netns: NsAccess,
}

impl Bypass {
    /// The bypass into and out of the namespace `netns` (a descriptor of it, kept).
    pub fn new(netns: OwnedFd) -> Bypass {
        Bypass {
            splicer: Splicer::default(),
            dgram_relay: DgramRelay::default(),
            netns: NsAccess::Enter(netns),
        }
    }

    /// From now on, sockets in the namespace come from a thread that stays there: pasta is
    /// about to lose the right to enter it. Returns that thread, for the isolation steps every
    /// thread goes through.
    pub fn keep_a_namespace_thread(&mut self) -> Result<&NsAgent, NsError> {
        if let NsAccess::Enter(fd) = &self.netns {
            self.netns = NsAccess::Thread(NsAgent::start(fd)?);
        }
        match &self.netns {
            NsAccess::Thread(agent) => Ok(agent),
            NsAccess::Enter(_) => unreachable!("just started"),
        }
    }

    /// Registers the relays on the reactor's epoll instance.
    pub fn attach(&mut self, reactor: &Reactor) -> io::Result<()> {
        self.splicer.listeners().attach(reactor.epoll_handle()?)?;
        self.dgram_relay.listeners().attach(reactor.epoll_handle()?)
    }

    pub fn owns_token(token: u64) -> bool {
        Splicer::owns_token(token) || DgramRelay::owns_token(token)
    }

    /// Handles an epoll event for one of the relays' tokens.
    pub fn ready(&mut self, token: u64, flags: EpollFlags) {
        if Splicer::owns_token(token) {
            self.splicer.ready(token, flags);
        } else {
            self.dgram_relay.ready(token, flags);
        }
    }

    /// When a listener put aside is due again, or relayed datagram flows may have gone idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.splicer.poll_timeout(), self.dgram_relay.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.splicer.handle_timeout(now);
        self.dgram_relay.handle_timeout(now);
    }

    /// Listens on `port` in the namespace on `at`'s addresses, relaying to port `to` of the
    /// host's loopback (`-T`, `-U`).
    pub fn listen_in(
        &mut self,
        proto: Proto,
        port: u16,
        to: u16,
        at: NsAddrs,
    ) -> Result<Bound, NsError> {
        match proto {
            Proto::Tcp => self
                .splicer
                .listeners()
                .listen_in(&self.netns, port, to, at),
            Proto::Udp => self
                .dgram_relay
                .listeners()
                .listen_in(&self.netns, port, to, at),
        }
    }

    /// Listens at `addr` in the namespace, relaying to port `to` of the host's loopback (one
    /// socket of a `-T`/`-U` rule added at run time): the error says why it can't.
    pub fn listen_at(&mut self, proto: Proto, addr: SocketAddr, to: u16) -> io::Result<()> {
        let at = NsAddrs::Only(addr.ip());
        let (bound, mut failed) = self
            .listen_in(proto, addr.port(), to, at)
            .map_err(|e| io::Error::other(e.to_string()))?;
        match failed.pop() {
            Some((_, e)) if bound == 0 => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops listening at `addr` in the namespace (a `-T`/`-U` rule went): what is being
    /// relayed carries on for TCP; UDP flows it took go with it.
    pub fn unlisten_at(&mut self, proto: Proto, addr: SocketAddr) {
        match proto {
            Proto::Tcp => self.splicer.unlisten_addr(addr),
            Proto::Udp => self.dgram_relay.unlisten_addr(addr),
        }
    }

    /// Stops listening on namespace port `port` (what is being relayed carries on for TCP).
    pub fn unlisten(&mut self, proto: Proto, port: u16) {
        match proto {
            Proto::Tcp => self.splicer.unlisten(port),
            Proto::Udp => self.dgram_relay.unlisten(port),
        }
    }

    /// The namespace ports listened on for `proto`.
    pub fn listening_ports(&self, proto: Proto) -> Vec<u16> {
        match proto {
            Proto::Tcp => self.splicer.listening_ports().collect(),
            Proto::Udp => self.dgram_relay.listening_ports().collect(),
        }
    }

    /// Relays `accepted`, a connection from the host's loopback, to `target` inside the
    /// namespace (`-t`); resets it if that fails.
    pub fn hand_over_stream(&mut self, accepted: OwnedFd, target: SocketAddr) -> io::Result<()> {
        self.splicer.relay_into(&self.netns, accepted, target)
    }

    /// Relays `datagram`, which the host's forwarding socket `socket` (named `key`) received
    /// from the loopback sender `client`, to `target` inside the namespace (`-u`).
    pub fn hand_over_datagram(
        &mut self,
        socket: HostSocket<'_>,
        client: SocketAddr,
        target: SocketAddr,
        datagram: &[u8],
    ) -> io::Result<()> {
        self.dgram_relay
            .relay_into(&self.netns, socket, client, target, datagram)
    }

    /// The host's forwarding socket `key` is gone: so are the flows it handed over.
    pub fn forget_host_socket(&mut self, key: u64) {
        self.dgram_relay.forget_host_socket(key);
    }

    /// Relays that failed for want of descriptors so far.
    pub fn fd_exhausted(&self) -> u64 {
        self.splicer.stats().fd_exhausted
    }
}

impl InNetns for Bypass {
    fn run_in<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError> {
        self.netns.run_in(f)
    }
}
