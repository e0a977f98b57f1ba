//! The engine's forwarding listeners: listening for `-t` and `-u` ports, accepting in
//! batches, and putting a listener aside while descriptors run out (`crate::listeners`).

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use sans_io::flow::{CloseSockets, ListenSpec, Proto, SockRef};
use sans_io::fwd::forwards::ListenSocket;
use sans_io::fwd::Forward;
use sans_io::time::Instant;

use super::table::State;
use super::{ListenError, ListenOptions, Report, Sockets};
use crate::listeners::{Listener, ACCEPT_PAUSE};
use crate::reactor::monotonic_now;
use crate::socket_sys::{
    listen_socket, local_addr, prepare_stream, sockaddr_to_std, udp_bound_socket, unmap,
};

/// Connections accepted per listener wake-up; the listener is level-triggered, so more wait
/// for the next round instead of starving everything else.
const ACCEPT_BATCH: usize = 64;

impl Sockets {
    /// Listens for one forwarded port. Without an address, on any address of each family
    /// `opts` allows, one socket per family (IPv6 ones with `IPV6_V6ONLY`, so that IPv4
    /// connections never show up as mapped addresses of a family the guest may not have).
    /// For UDP, the sockets are bound (sharing the address with the flows' reply sockets, see
    /// `HostSockets::udp_reply_open`) and listed by [`Sockets::udp_listeners`].
    /// Returns how many sockets now listen, and what failed.
    pub fn listen(&mut self, spec: &ListenSpec, opts: ListenOptions) -> (usize, Vec<ListenError>) {
        let mut bound = 0;
        let mut errors = Vec::new();
        let addrs: Vec<IpAddr> = match spec.addr {
            Some(a) => vec![a],
            None => {
                let mut v = Vec::new();
                if opts.ipv4 {
                    v.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
                if opts.ipv6 {
                    v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
                v
            }
        };
        for addr in addrs {
            let sa = SocketAddr::new(addr, spec.port);
            let made = match spec.proto {
                Proto::Tcp => listen_socket(sa, spec.iface.as_deref(), opts.freebind),
                Proto::Udp => udp_bound_socket(sa, spec.iface.as_deref(), opts.freebind),
            };
            match made {
                Ok(fd) => {
                    let actual = local_addr(fd.as_raw_fd()).unwrap_or(sa);
                    let added = match spec.proto {
                        Proto::Tcp => self
                            .listeners
                            .add(Listener::new(fd, actual, ()), self.epoll.as_ref()),
                        Proto::Udp => self.insert_dgram(fd).map(|index| {
                            let iface = spec.iface.clone();
                            self.udp_listeners.insert(SockRef(index), (actual, iface));
                        }),
                    };
                    if let Err(e) = added {
                        errors.push(ListenError {
                            proto: spec.proto,
                            addr,
                            iface: spec.iface.clone(),
                            port: spec.port,
                            errno: e.raw_os_error().unwrap_or(libc::EIO),
                        });
                    } else {
                        bound += 1;
                    }
                }
                Err(e) => errors.push(ListenError {
                    proto: spec.proto,
                    addr,
                    iface: spec.iface.clone(),
                    port: spec.port,
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                }),
            }
        }
        (bound, errors)
    }

    /// [`Sockets::listen`] for a forwarding entry (`-t`, `-u`).
    pub fn listen_forward(
        &mut self,
        proto: Proto,
        f: &Forward,
        opts: ListenOptions,
    ) -> (usize, Vec<ListenError>) {
        let spec = ListenSpec {
            proto,
            addr: f.bind,
            iface: f.iface.clone(),
            port: f.port,
        };
        self.listen(&spec, opts)
    }

    /// Opens one listening socket of a forwarding table (`Engine::apply_forwards`): for UDP,
    /// the socket the engine reads (`Engine::add_udp_listener`).
    pub fn open_forward_listener(
        &mut self,
        socket: &ListenSocket,
        freebind: bool,
    ) -> io::Result<Option<SockRef>> {
        let iface = socket.iface.as_deref();
        match socket.proto() {
            Proto::Tcp => {
                let fd = listen_socket(socket.addr, iface, freebind)?;
                let actual = local_addr(fd.as_raw_fd()).unwrap_or(socket.addr);
                self.listeners
                    .add(Listener::new(fd, actual, ()), self.epoll.as_ref())?;
                Ok(None)
            }
            Proto::Udp => {
                let fd = udp_bound_socket(socket.addr, iface, freebind)?;
                let actual = local_addr(fd.as_raw_fd()).unwrap_or(socket.addr);
                let s = SockRef(self.insert_dgram(fd)?);
                self.udp_listeners.insert(s, (actual, socket.iface.clone()));
                Ok(Some(s))
            }
        }
    }

    /// Closes one listening socket of a forwarding table; for UDP, returns the socket the
    /// engine must forget (`Engine::remove_udp_listener`). Flows already open carry on.
    pub fn close_forward_listener(&mut self, socket: &ListenSocket) -> Option<SockRef> {
        match socket.proto() {
            Proto::Tcp => {
                self.listeners.remove_addr(socket.addr, self.epoll.as_ref());
                None
            }
            Proto::Udp => {
                let s = *self
                    .udp_listeners
                    .iter()
                    .find(|(_, (a, iface))| *a == socket.addr && *iface == socket.iface)?
                    .0;
                self.udp_listeners.remove(&s);
                self.close(s, false);
                // Flows it handed over to the bypass have nowhere to answer now.
                if let Some(bypass) = self.bypass.as_mut() {
                    bypass.forget_host_socket(u64::from(s.0));
                }
                Some(s)
            }
        }
    }

    /// Stops listening on `port` for `proto` (every address): `auto` forwarding found nothing
    /// bound there any more. Returns the UDP listeners closed, which the engine must forget
    /// (`Engine::remove_udp_listener`); flows already open keep their sockets.
    pub fn unlisten(&mut self, proto: Proto, port: u16) -> Vec<SockRef> {
        match proto {
            Proto::Tcp => {
                self.listeners.remove_port(port, self.epoll.as_ref());
                Vec::new()
            }
            Proto::Udp => {
                let mut closed = Vec::new();
                self.udp_listeners.retain(|s, (addr, _)| {
                    let keep = addr.port() != port;
                    if !keep {
                        closed.push(*s);
                    }
                    keep
                });
                for &s in &closed {
                    self.close(s, false);
                    // Flows it handed over to the bypass have nowhere to answer now.
                    if let Some(bypass) = self.bypass.as_mut() {
                        bypass.forget_host_socket(u64::from(s.0));
                    }
                }
                closed
            }
        }
    }

    /// Takes a listener off epoll for a while: `accept4` failed with `e` for want of
    /// descriptors or memory, and the connection waiting would wake us again at once.
    pub(super) fn pause_listener(&mut self, index: usize, e: &io::Error) {
        let until = monotonic_now() + ACCEPT_PAUSE;
        if !self.listeners.pause(index, until, self.epoll.as_ref()) {
            return;
        }
        self.stats.accept_paused += 1;
        if let Some(l) = self.listeners.get(index) {
            // The caller's drop log says it, rate-limited (see `Sockets::out_of_descriptors`).
            log::debug!("cannot accept connections on {}: {e}", l.addr);
        }
    }

    /// Watches the listeners put aside again: those due at `now`, or all with `None`.
    pub(super) fn resume_listeners(&mut self, now: Option<Instant>) {
        self.listeners.resume(now, self.epoll.as_ref());
    }

    pub(super) fn accept_ready(&mut self, listener: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            if l.paused() {
                // An event from before the pause, in the same wake-up.
                return;
            }
            let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: accept4 writes at most `len` bytes of address into our storage.
            let fd = unsafe {
                libc::accept4(
                    l.fd.as_raw_fd(),
                    storage.as_mut_ptr().cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    // Out of descriptors or memory: the connection waits in the backlog, and
                    // the level-triggered listener would wake us again at once.
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        self.pause_listener(listener, &e);
                        return;
                    }
                    // EAGAIN: done.
                    _ => return,
                }
            }
            // SAFETY: accept4 returned a new descriptor we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: the kernel initialised `len` bytes of the storage.
            let peer = sockaddr_to_std(unsafe { storage.assume_init_ref() }, len);
            let local = local_addr(fd.as_raw_fd());
            let (Some(peer), Ok(local)) = (peer, local) else {
                continue;
            };
            prepare_stream(fd.as_raw_fd());
            match self.insert(fd, State::Connected) {
                Ok(index) => {
                    self.stats.accepted += 1;
                    let gen = self.slots.gen(index as usize).unwrap_or_default();
                    self.reports.push_back((
                        gen,
                        Report::Accepted {
                            sock: SockRef(index),
                            peer: unmap(peer),
                            local: unmap(local),
                        },
                    ));
                }
                Err(_) => continue,
            }
        }
    }
}
