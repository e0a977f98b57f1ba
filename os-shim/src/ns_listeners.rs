//! The sockets pasta binds inside the namespace for `-T` and `-U`: on the namespace's loopback
//! (127.0.0.1 and ::1), made from a thread that entered it, each with the host port its
//! traffic goes to. Shared by the TCP splicer and the UDP relay, which differ in what they do
//! when one is readable. Putting them aside when descriptors run out is `crate::listeners`'.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::sys::epoll::Epoll;

use crate::listeners::{Listener, Listeners};
use crate::ns::NsError;
use crate::ns_agent::InNetns;

/// One socket in the namespace; `to` is the host port its traffic goes to.
pub type NsListener = Listener<u16>;

/// The namespace's listeners; slot `i` is reported with token `token_base | i`.
pub type NsListeners = Listeners<u16>;

/// Which namespace addresses a `-T`/`-U` port listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsAddrs {
    /// The namespace's loopback: 127.0.0.1 and ::1, each if its family is in use.
    Loopback { v4: bool, v6: bool },
    /// The one address the forwarding spec gives (`-T 127.0.0.1/8080`).
    Only(IpAddr),
}

impl NsAddrs {
    fn addrs(self) -> impl Iterator<Item = IpAddr> {
        let (v4, v6, only) = match self {
            NsAddrs::Loopback { v4, v6 } => (v4, v6, None),
            NsAddrs::Only(a) => (false, false, Some(a)),
        };
        let v4 = v4.then_some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let v6 = v6.then_some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        [v4, v6, only].into_iter().flatten()
    }
}

/// Sockets bound, and the addresses that failed with why.
pub type Bound = (usize, Vec<(SocketAddr, io::Error)>);

impl Listeners<u16> {
    /// The namespace ports listened on.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.iter().map(|l| l.addr.port())
    }

    /// Binds `port` in the namespace with `make`, leading to host port `to`, on `at`'s
    /// addresses; registers them on `epoll` if given.
    pub fn listen_in(
        &mut self,
        netns: &impl InNetns,
        (port, to): (u16, u16),
        at: NsAddrs,
        make: fn(SocketAddr) -> io::Result<OwnedFd>,
        epoll: Option<&Epoll>,
    ) -> Result<Bound, NsError> {
        let addrs: Vec<SocketAddr> = at.addrs().map(|a| SocketAddr::new(a, port)).collect();
        let made =
            netns.run_in(move || addrs.into_iter().map(|a| (a, make(a))).collect::<Vec<_>>())?;
        let mut bound = 0;
        let mut failed = Vec::new();
        for (addr, result) in made {
            match result.and_then(|fd| self.add(Listener::new(fd, addr, to), epoll)) {
                Ok(()) => bound += 1,
                Err(e) => failed.push((addr, e)),
            }
        }
        Ok((bound, failed))
    }
}

/// A relay's side in the namespace: its listeners there, how they are made, and the epoll
/// instance everything of the relay is registered on (once attached).
#[derive(Debug)]
pub struct RelayListeners {
    pub(crate) set: NsListeners,
    pub(crate) epoll: Option<Epoll>,
    make: fn(SocketAddr) -> io::Result<OwnedFd>,
}

impl RelayListeners {
    /// Listeners reported with tokens from `token_base`, made by `make`.
    pub(crate) fn new(token_base: u64, make: fn(SocketAddr) -> io::Result<OwnedFd>) -> Self {
        RelayListeners {
            set: NsListeners::new(token_base),
            epoll: None,
            make,
        }
    }

    /// Registers the listeners (and from now on everything of the relay) on `epoll`.
    pub fn attach(&mut self, epoll: Epoll) -> io::Result<()> {
        self.set.register(&epoll)?;
        self.epoll = Some(epoll);
        Ok(())
    }

    /// The namespace ports listened on.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.set.ports()
    }

    /// Listens on `port` in the namespace on `at`'s addresses, leading to port `to` of the
    /// host's loopback of the same family. Returns how many sockets listen now, and what
    /// failed.
    pub fn listen_in(
        &mut self,
        netns: &impl InNetns,
        port: u16,
        to: u16,
        at: NsAddrs,
    ) -> Result<Bound, NsError> {
        self.set
            .listen_in(netns, (port, to), at, self.make, self.epoll.as_ref())
    }
}
