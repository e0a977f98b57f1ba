//! The forwarding tables' listening sockets, as the shim opens and closes them: at start-up,
//! the command line's (each as best it can, a port that can't be bound a warning), and at run
//! time a whole table replaced at once ([`apply_forwards`], what the control socket calls),
//! all or nothing.
//!
//! Inbound (`-t`/`-u`, `HOST`) sockets are the engine's listeners on the host; outbound
//! (`-T`/`-U`, `SPLICE`, pasta's) are the loopback bypass's in the namespace, made by its
//! namespace thread once pasta is isolated.

use std::io;

use os_shim::sockets::Sockets;
use sans_io::engine::Engine;
use sans_io::flow::{DgramSockets, SockRef};
use sans_io::fwd::apply::{Applied, ApplyError, ForwardListeners, ListenFailure};
use sans_io::fwd::forwards::{Direction, ListenSocket};
use sans_io::fwd::rule::ForwardTable;

use crate::autofwd::AutoForward;

/// At most this many listener failures are named one by one at start-up.
const LISTEN_WARNINGS_SHOWN: usize = 8;

/// The shim's sockets as the engine's forwarding listeners.
pub struct ShimListeners<'a> {
    pub sockets: &'a mut Sockets,
    /// `--freebind`: addresses not (yet) on the host may be bound.
    pub freebind: bool,
}

impl ForwardListeners for ShimListeners<'_> {
    fn open_listener(
        &mut self,
        direction: Direction,
        socket: &ListenSocket,
    ) -> Result<Option<SockRef>, ListenFailure> {
        let made = match direction {
            Direction::Inbound => self.sockets.open_forward_listener(socket, self.freebind),
            Direction::Outbound => match self.sockets.bypass_mut() {
                Some(bypass) => {
                    let to = socket.to.unwrap_or(socket.addr.port());
                    bypass
                        .listen_at(socket.proto(), socket.addr, to)
                        .map(|()| None)
                }
                None => Err(io::Error::other("no loopback bypass (pasta only)")),
            },
        };
        made.map_err(|e| ListenFailure {
            in_use: e.raw_os_error() == Some(libc::EADDRINUSE),
            reason: e.to_string(),
        })
    }

    fn close_listener(&mut self, direction: Direction, socket: &ListenSocket) -> Option<SockRef> {
        match direction {
            Direction::Inbound => self.sockets.close_forward_listener(socket),
            Direction::Outbound => {
                if let Some(bypass) = self.sockets.bypass_mut() {
                    bypass.unlisten_at(socket.proto(), socket.addr);
                }
                None
            }
        }
    }

    fn datagram_sockets(&mut self) -> Option<&mut dyn DgramSockets> {
        Some(self.sockets)
    }
}

/// Opens the command line's listeners, both directions; a port that can't be bound is a
/// warning (the first few named), as with the original.
pub(crate) fn listen_at_start(engine: &mut Engine, sockets: &mut Sockets) {
    let name = engine.config().mode.name();
    let freebind = engine.config().freebind;
    let failed = engine.listen_forwards(&mut ShimListeners { sockets, freebind });
    for e in failed.iter().take(LISTEN_WARNINGS_SHOWN) {
        eprintln!("{name}: warning: {}", described(e));
    }
    if failed.len() > LISTEN_WARNINGS_SHOWN {
        eprintln!(
            "{name}: warning: ... and {} more ports could not be bound",
            failed.len() - LISTEN_WARNINGS_SHOWN
        );
    }
}

/// `e`, saying where an outbound socket is.
fn described(e: &ApplyError) -> String {
    match e.socket.to {
        Some(_) => format!("{e} (in the namespace)"),
        None => e.to_string(),
    }
}

/// Replaces the forwarding table of `direction` (`HOST`: `-t`/`-u`; `SPLICE`: `-T`/`-U`)
/// with `table` while the program runs, in one step: the listeners of rules that went are
/// closed (established connections and UDP conversations carry on), those of new rules opened, unchanged
/// ones kept. All or nothing: a rule this configuration can't serve or a port in use changes
/// nothing, and the error says which and why. `auto` (kept beside the tables) gives up the
/// ports the new table names first. For the control socket.
pub fn apply_forwards(
    engine: &mut Engine,
    sockets: &mut Sockets,
    auto: Option<&mut AutoForward>,
    direction: Direction,
    table: ForwardTable,
) -> Result<Applied, String> {
    if let Some(auto) = auto {
        auto.give_up_ports(direction, &table, engine, sockets);
    }
    let freebind = engine.config().freebind;
    let done = engine
        .apply_forwards(direction, table, &mut ShimListeners { sockets, freebind })
        .map_err(|e| match e {
            sans_io::fwd::forwards::ForwardError::Listen(e) => described(&e),
            e => e.to_string(),
        })?;
    for (socket, why) in &done.skipped {
        log::debug!(
            "best-effort forward: cannot listen at {}: {}",
            socket.addr,
            why.reason
        );
    }
    log::info!(
        "{} forwarding changed: {} sockets opened, {} closed",
        direction.pif_name(),
        done.opened,
        done.closed
    );
    Ok(done)
}

#[cfg(test)]
mod tests;
