//! Putting a new forwarding table into effect with the driver's listeners, all or nothing:
//! the one sequence the shim and the simulator both run (see [`apply`]).
//!
//! The new sockets are opened first, so that a port in use fails the change before anything
//! was closed. One case needs the old sockets gone first: a new socket overlapping one being
//! closed (`*:8080` replaced by `127.0.0.1:8080`, a wildcard and an address of its family);
//! a socket that fails as in use while there are sockets to close is tried again once those
//! are closed. If a required socket still can't be opened, the sockets opened are closed and
//! those closed are opened again: the old table stays, with its listeners.

use std::net::SocketAddr;

use super::forwards::{Direction, ForwardChange, ListenSocket};
use crate::flow::{DgramSockets, SockRef};

/// Why a socket could not be opened: `in_use` for `EADDRINUSE`, and the reason as the driver
/// words it (its `strerror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFailure {
    pub in_use: bool,
    pub reason: String,
}

/// The driver's listening sockets for forwarding, as [`apply`] drives them. A UDP socket
/// listening for the inbound table is a socket the engine reads
/// (`Engine::add_udp_listener`): `open` returns it, and `close` the one it closed.
pub trait ForwardListeners {
    fn open_listener(
        &mut self,
        direction: Direction,
        socket: &ListenSocket,
    ) -> Result<Option<SockRef>, ListenFailure>;
    fn close_listener(&mut self, direction: Direction, socket: &ListenSocket) -> Option<SockRef>;
    /// The sockets the engine opens reply sockets with, for the exchanges still waiting on a
    /// UDP listener closed (see `Udp::remove_listener`); without them (`None`) those
    /// exchanges end.
    fn datagram_sockets(&mut self) -> Option<&mut dyn DgramSockets>;
}

/// What [`apply`] did, besides changing the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub opened: usize,
    pub closed: usize,
    /// Best-effort sockets that could not be opened, with why: skipped.
    pub skipped: Vec<(ListenSocket, ListenFailure)>,
}

/// The engine's inbound UDP listeners that came and went, whatever the outcome (an undone
/// change reopens sockets, which are new ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpListenerChanges {
    pub closed: Vec<SockRef>,
    /// Each with the address and interface it is bound to.
    pub opened: Vec<(SockRef, SocketAddr, Option<String>)>,
}

/// A required socket that could not be opened: nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot listen on {} port {} ({}): {}", proto_name(socket), socket.addr.port(), socket.addr.ip(), failure.reason)]
pub struct ApplyError {
    pub socket: ListenSocket,
    pub failure: ListenFailure,
}

fn proto_name(s: &ListenSocket) -> &'static str {
    match s.proto {
        super::forwards::ProtoKey::Tcp => "TCP",
        super::forwards::ProtoKey::Udp => "UDP",
    }
}

/// The driver's listeners, with the engine's UDP listeners that came and went noted.
struct Noting<'a> {
    dir: Direction,
    listeners: &'a mut dyn ForwardListeners,
    udp: &'a mut UdpListenerChanges,
}

impl Noting<'_> {
    fn open(&mut self, socket: &ListenSocket) -> Result<(), ListenFailure> {
        let s = self.listeners.open_listener(self.dir, socket)?;
        if let (Some(s), Direction::Inbound) = (s, self.dir) {
            self.udp.opened.push((s, socket.addr, socket.iface.clone()));
        }
        Ok(())
    }

    fn close(&mut self, socket: &ListenSocket) {
        let s = self.listeners.close_listener(self.dir, socket);
        if let (Some(s), Direction::Inbound) = (s, self.dir) {
            self.udp.opened.retain(|(o, ..)| *o != s);
            self.udp.closed.push(s);
        }
    }
}

/// Opens each of `sockets` for `direction` as best it can (start-up: a port that can't be
/// bound is left out, as the C original does); `udp` gets the engine's UDP listeners opened.
/// Returns the sockets that failed, with why.
pub fn open_each<'s>(
    direction: Direction,
    sockets: impl IntoIterator<Item = &'s ListenSocket>,
    listeners: &mut dyn ForwardListeners,
    udp: &mut UdpListenerChanges,
) -> Vec<ApplyError> {
    let mut l = Noting {
        dir: direction,
        listeners,
        udp,
    };
    sockets
        .into_iter()
        .filter_map(|socket| {
            l.open(socket).err().map(|failure| ApplyError {
                socket: socket.clone(),
                failure,
            })
        })
        .collect()
}

/// Opens and closes `listeners` for `change` (planned by `Forwards::plan`), all or nothing,
/// see the module documentation; `udp` gets the engine's UDP listeners that came and went
/// either way. On success the caller commits the change.
pub fn apply(
    change: &ForwardChange,
    listeners: &mut dyn ForwardListeners,
    udp: &mut UdpListenerChanges,
) -> Result<Applied, ApplyError> {
    let mut l = Noting {
        dir: change.direction,
        listeners,
        udp,
    };
    let mut done = Applied::default();
    let mut opened: Vec<&ListenSocket> = Vec::new();
    let mut retry: Vec<(&ListenSocket, bool)> = Vec::new();
    let close = &change.diff.close;
    for (socket, required) in &change.diff.open {
        match l.open(socket) {
            Ok(()) => opened.push(socket),
            Err(f) if f.in_use && !close.is_empty() => retry.push((socket, *required)),
            Err(failure) if *required => {
                undo(&mut l, &opened, &[]);
                let socket = socket.clone();
                return Err(ApplyError { socket, failure });
            }
            Err(f) => done.skipped.push((socket.clone(), f)),
        }
    }
    for socket in close {
        l.close(socket);
    }
    for (socket, required) in retry {
        match l.open(socket) {
            Ok(()) => opened.push(socket),
            Err(failure) if required => {
                undo(&mut l, &opened, close);
                let socket = socket.clone();
                return Err(ApplyError { socket, failure });
            }
            Err(f) => done.skipped.push((socket.clone(), f)),
        }
    }
    done.closed = close.len();
    done.opened = opened.len();
    Ok(done)
}

/// Closes what was `opened` and opens again what was `closed` (best effort: the port was
/// ours a moment ago).
fn undo(l: &mut Noting<'_>, opened: &[&ListenSocket], closed: &[ListenSocket]) {
    for socket in opened {
        l.close(socket);
    }
    for socket in closed {
        let _ = l.open(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::derive::derive;
    use crate::config::{Config, Mode, NetOptions};
    use crate::flow::Proto;
    use crate::fwd::forwards::{Forwards, ProtoKey};
    use crate::fwd::rule::{ForwardRule, ForwardTable, Listen};
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    /// Listening sockets as the kernel keeps them: an address and its family's wildcard on
    /// the same port are in each other's way; `taken` are other programs'.
    #[derive(Default)]
    struct Kernel {
        ours: BTreeSet<SocketAddr>,
        taken: BTreeSet<SocketAddr>,
        next: u32,
    }

    impl Kernel {
        fn clashes(&self, a: SocketAddr) -> bool {
            self.ours.iter().chain(&self.taken).any(|b| {
                a.port() == b.port()
                    && a.is_ipv4() == b.is_ipv4()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            })
        }
    }

    impl ForwardListeners for Kernel {
        fn open_listener(
            &mut self,
            _: Direction,
            socket: &ListenSocket,
        ) -> Result<Option<SockRef>, ListenFailure> {
            if self.clashes(socket.addr) {
                return Err(ListenFailure {
                    in_use: true,
                    reason: "Address already in use".into(),
                });
            }
            self.ours.insert(socket.addr);
            self.next += 1;
            Ok((socket.proto == ProtoKey::Udp).then_some(SockRef(self.next)))
        }

        fn close_listener(&mut self, _: Direction, socket: &ListenSocket) -> Option<SockRef> {
            self.ours.remove(&socket.addr);
            None
        }

        fn datagram_sockets(&mut self) -> Option<&mut dyn DgramSockets> {
            None
        }
    }

    fn config() -> Config {
        let mut opts = NetOptions::new(Mode::Pasta);
        opts.tcp_in.add("0.0.0.0/8080".parse().unwrap()).unwrap();
        opts.udp_in.add(crate::fwd::PortSpec::None).unwrap();
        derive(&opts, &Default::default(), &Default::default())
            .unwrap()
            .config
    }

    fn at(addr: &str, port: u16) -> ForwardRule {
        ForwardRule {
            listen: Listen::Addr(addr.parse::<IpAddr>().unwrap()),
            ..ForwardRule::ports(Proto::Tcp, port, port)
        }
    }

    #[test]
    fn an_overlapping_replacement_opens_once_the_old_socket_is_closed() {
        let c = config();
        let (f, _) = Forwards::from_config(&c, 32768..=60999);
        let mut k = Kernel::default();
        k.ours.insert("0.0.0.0:8080".parse().unwrap());
        let mut t = ForwardTable::new();
        t.add(at("127.0.0.1", 8080)).unwrap();
        let change = f.plan(&c, Direction::Inbound, t).unwrap();
        let done = apply(&change, &mut k, &mut Default::default()).unwrap();
        assert_eq!((done.opened, done.closed), (1, 1));
        let now: Vec<String> = k.ours.iter().map(ToString::to_string).collect();
        assert_eq!(now, ["127.0.0.1:8080"]);
    }

    #[test]
    fn a_failed_change_undoes_what_it_opened_and_closed() {
        let c = config();
        let (f, _) = Forwards::from_config(&c, 32768..=60999);
        let mut k = Kernel::default();
        k.ours.insert("0.0.0.0:8080".parse().unwrap());
        k.taken.insert("127.0.0.1:9000".parse().unwrap());
        let mut t = ForwardTable::new();
        t.add(at("127.0.0.1", 8080)).unwrap();
        t.add(at("0.0.0.0", 7000)).unwrap();
        t.add(at("127.0.0.1", 9000)).unwrap();
        let change = f.plan(&c, Direction::Inbound, t).unwrap();
        let e = apply(&change, &mut k, &mut Default::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot listen on TCP port 9000 (127.0.0.1): Address already in use"
        );
        let now: Vec<String> = k.ours.iter().map(ToString::to_string).collect();
        assert_eq!(now, ["0.0.0.0:8080"]);
    }
}
