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

/// Sockets bound, and the addresses that failed with why.
pub type Bound = (usize, Vec<(SocketAddr, io::Error)>);

impl Listeners<u16> {
    /// The namespace ports listened on.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.iter().map(|l| l.addr.port())
    }

    /// Binds `port` on the namespace's loopback addresses (`v4`: 127.0.0.1, `v6`: ::1) with
    /// `make`, leading to host port `to`; registers them on `epoll` if given.
    pub fn listen_in(
        &mut self,
        netns: &impl InNetns,
        (port, to): (u16, u16),
        (v4, v6): (bool, bool),
        make: fn(SocketAddr) -> io::Result<OwnedFd>,
        epoll: Option<&Epoll>,
    ) -> Result<Bound, NsError> {
        let mut addrs = Vec::new();
        if v4 {
            addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
        if v6 {
            addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
        }
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
