//! The control-socket server (`-c, --conf-path PATH`), which `pesto` and the C `pesto` talk
//! to, served inside the main loop: never a blocking call, never a thread.
//!
//! One client at a time, as with the C original: while one is served the listener is off the
//! event loop, so further clients wait in the kernel's backlog until it is done. A client gets
//! the hello and the tables at once (written without blocking, the rest when the socket has
//! room); what it sends back is decoded as it comes, with the decoder's bounds (one item of
//! partial input at most, [`MAX_RULES`](sans_io::fwd::rule::MAX_RULES) rules a table, each
//! table once). A client that closes without sending anything only listed the tables. A
//! complete update replaces every table it names in one step, or changes nothing: a decode
//! error, a conflict, a rule this program can't serve or a port in use closes the connection
//! and is logged as a warning with the reason. Each client has [`CLIENT_DEADLINE`] for all of
//! it, so a slow or silent one can't hold the socket.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use os_shim::control_socket;
use os_shim::reactor::Reactor;
use os_shim::sockets::Sockets;
use os_shim::tokens::{TOKEN_CONTROL_CLIENT, TOKEN_CONTROL_LISTENER};
use sans_io::config::{Config, Mode};
use sans_io::control::{
    encode_listing, encode_status, Caps, Pif, ReceivedTable, Status, Stream, TablesBuilder,
};
use sans_io::engine::Engine;
use sans_io::fwd::forwards::Direction;
use sans_io::fwd::rule::ForwardTable;
use sans_io::time::Instant;

use crate::autofwd::AutoForward;
use crate::forwards;

/// How long a client has for everything: reading the tables and sending its update.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Bytes read per system call, and reads per wake-up at most (the loop comes back for more):
/// a whole update of three full tables is about 43 KiB.
const READ_CHUNK: usize = 4096;
const READS_PER_WAKEUP: usize = 16;

/// The server: its listening socket and the client being served, if any.
pub struct ControlServer {
    path: PathBuf,
    listener: OwnedFd,
    epoll: Option<Epoll>,
    client: Option<Client>,
}

/// The client being served.
struct Client {
    fd: OwnedFd,
    /// Who it is, for the log (`SO_PEERCRED`).
    who: String,
    /// The hello and the tables, and how much of them went.
    out: Vec<u8>,
    sent: usize,
    /// Its update, as far as it came.
    update: TablesBuilder,
    received: usize,
    deadline: Instant,
}

/// What became of a client after some input or output.
enum Next {
    Continue,
    /// Done with it; the text is logged (at info level for a normal end).
    Close(Result<String, String>),
}

impl ControlServer {
    /// Makes the socket at `path` (see [`control_socket::bind`]): before the sandbox takes the
    /// filesystem away; it is kept as a descriptor.
    pub fn bind(path: &Path) -> Result<ControlServer, String> {
        let listener = control_socket::bind(path).map_err(|e| e.to_string())?;
        log::info!("Configuration socket: {}", path.display());
        Ok(ControlServer {
            path: path.to_owned(),
            listener,
            epoll: None,
            client: None,
        })
    }

    /// Puts the listener on the main loop's epoll instance.
    pub fn attach(&mut self, reactor: &Reactor) -> io::Result<()> {
        let epoll = reactor.epoll_handle()?;
        epoll.add(
            self.listener.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CONTROL_LISTENER),
        )?;
        self.epoll = Some(epoll);
        Ok(())
    }

    pub fn owns_token(token: u64) -> bool {
        token == TOKEN_CONTROL_LISTENER || token == TOKEN_CONTROL_CLIENT
    }

    /// When the current client runs out of time.
    pub fn deadline(&self) -> Option<Instant> {
        self.client.as_ref().map(|c| c.deadline)
    }

    /// Drops a client whose time is up.
    pub fn check_deadline(&mut self, now: Instant) {
        if self.client.as_ref().is_some_and(|c| c.deadline <= now) {
            self.close(Err(format!(
                "timed out after {} s",
                CLIENT_DEADLINE.as_secs()
            )));
        }
    }

    /// An epoll event on one of ours.
    pub fn ready(
        &mut self,
        token: u64,
        now: Instant,
        engine: &mut Engine,
        sockets: &mut Sockets,
        auto: Option<&mut AutoForward>,
    ) {
        if token == TOKEN_CONTROL_LISTENER {
            self.accept(now, engine);
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let next = match client.write() {
            Ok(Next::Continue) => client.read(),
            other => other,
        };
        let next = match next {
            Ok(Next::Continue) if client.update.is_done() => {
                let tables =
                    std::mem::replace(&mut client.update, TablesBuilder::new(Stream::Update))
                        .into_tables();
                Ok(Next::Close(apply_update(tables, engine, sockets, auto)))
            }
            other => other,
        };
        match next {
            Ok(Next::Continue) => self.update_interest(),
            Ok(Next::Close(outcome)) => self.close(outcome),
            Err(e) => self.close(Err(e.to_string())),
        }
    }

    /// Takes the next client if none is served, and sends it the tables.
    fn accept(&mut self, now: Instant, engine: &Engine) {
        if self.client.is_some() {
            return;
        }
        let fd = match control_socket::accept(self.listener.as_fd()) {
            Ok(Some(fd)) => fd,
            Ok(None) => return,
            Err(e) => {
                log::warn!("configuration socket: accept: {e}");
                return;
            }
        };
        let who = match control_socket::peer(fd.as_fd()) {
            Some(c) => format!("PID {}, UID {}", c.pid(), c.uid()),
            None => "unknown peer".to_owned(),
        };
        let mut out = Vec::new();
        let caps = table_caps(engine.config());
        let mut tables = vec![(
            Pif::Host,
            caps.host,
            engine.forwards().table(Direction::Inbound).rules(),
        )];
        if let Some(splice) = caps.splice {
            tables.push((
                Pif::Splice,
                splice,
                engine.forwards().table(Direction::Outbound).rules(),
            ));
        }
        if let Err(e) = encode_listing(&tables, &mut out) {
            log::warn!("configuration socket: cannot list the tables: {e}");
            return;
        }
        log::debug!("configuration client connected ({who})");
        // Further clients wait in the backlog until this one is done.
        if let Some(epoll) = &self.epoll {
            let _ = epoll.delete(self.listener.as_fd());
        }
        let mut client = Client {
            fd,
            who,
            out,
            sent: 0,
            update: TablesBuilder::new(Stream::Update),
            received: 0,
            deadline: now + CLIENT_DEADLINE,
        };
        match client.write() {
            Ok(Next::Continue) => {}
            Ok(Next::Close(outcome)) => return self.finish(client, outcome),
            Err(e) => return self.finish(client, Err(e.to_string())),
        }
        if let Some(epoll) = &self.epoll {
            if let Err(e) = epoll.add(client.fd.as_fd(), client.interest()) {
                return self.finish(client, Err(format!("cannot watch the client: {e}")));
            }
        }
        self.client = Some(client);
    }

    /// Watches the client for output room only while something waits to go.
    fn update_interest(&mut self) {
        let (Some(epoll), Some(client)) = (&self.epoll, &self.client) else {
            return;
        };
        let mut event = client.interest();
        if let Err(e) = epoll.modify(client.fd.as_fd(), &mut event) {
            self.close(Err(format!("cannot watch the client: {e}")));
        }
    }

    fn close(&mut self, outcome: Result<String, String>) {
        if let Some(client) = self.client.take() {
            if let Some(epoll) = &self.epoll {
                let _ = epoll.delete(client.fd.as_fd());
            }
            self.finish(client, outcome);
        }
    }

    /// Logs how it went, tells a client that sent an update, closes it, and listens for the
    /// next one.
    fn finish(&mut self, client: Client, outcome: Result<String, String>) {
        if client.received > 0 {
            // Our extension (sans_io::control::status): our pesto prints a refusal and exits
            // 1; the C pesto has stopped reading, and the bytes go with the connection. Best
            // effort: a client whose socket is full or gone gets nothing.
            let status = match &outcome {
                Ok(_) => Status::Applied,
                Err(why) => Status::Refused(why.clone()),
            };
            let mut answer = Vec::new();
            encode_status(&status, &mut answer);
            let _ = control_socket::write(client.fd.as_fd(), &answer);
        }
        match outcome {
            Ok(what) => log::info!("configuration client ({}): {what}", client.who),
            // The C pesto can't hear the answer above: a warning is all its user gets.
            Err(why) => log::warn!(
                "configuration client ({}): {why}; forwarding unchanged",
                client.who
            ),
        }
        drop(client);
        if let Some(epoll) = &self.epoll {
            let listen = EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CONTROL_LISTENER);
            if let Err(e) = epoll.add(self.listener.as_fd(), listen) {
                log::warn!(
                    "configuration socket {}: cannot listen for clients any more: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// The tables' capabilities, `None` for a table this program has not.
struct Listing {
    host: Caps,
    splice: Option<Caps>,
}

/// The capabilities of this program's tables, in pif order.
fn table_caps(config: &Config) -> Listing {
    let mut caps = Caps::default();
    if config.ip4.is_some() {
        caps = caps | Caps::IPV4;
    }
    if config.ip6.is_some() {
        caps = caps | Caps::IPV6;
    }
    if config.protocols.tcp {
        caps = caps | Caps::TCP;
    }
    if config.protocols.udp {
        caps = caps | Caps::UDP;
    }
    // No SCAN: `auto` is set on the command line only (the engine keeps it beside the
    // tables). Outbound rules have no interface: pesto then makes them listen on the
    // namespace's loopback addresses, which is what our bypass does.
    Listing {
        host: caps | Caps::IFNAME,
        splice: (config.mode == Mode::Pasta).then_some(caps),
    }
}

impl Client {
    fn interest(&self) -> EpollEvent {
        let mut flags = EpollFlags::EPOLLIN;
        if self.sent < self.out.len() {
            flags |= EpollFlags::EPOLLOUT;
        }
        EpollEvent::new(flags, TOKEN_CONTROL_CLIENT)
    }

    /// Sends what the socket takes of the tables.
    fn write(&mut self) -> io::Result<Next> {
        while self.sent < self.out.len() {
            let n = control_socket::write(self.fd.as_fd(), &self.out[self.sent..])?;
            if n == 0 {
                break;
            }
            self.sent += n;
        }
        Ok(Next::Continue)
    }

    /// Reads what came of the update, into the decoder.
    fn read(&mut self) -> io::Result<Next> {
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_WAKEUP {
            if self.update.is_done() {
                break;
            }
            let want = self.update.wanted().clamp(1, READ_CHUNK);
            let got = match control_socket::read(self.fd.as_fd(), &mut buf[..want]) {
                // A client that leaves without reading all of the tables (a pesto that
                // refused our hello, say) resets the connection: it sent nothing either.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && self.received == 0 => {
                    return Ok(Next::Close(Ok("left without an update".to_owned())))
                }
                got => got?,
            };
            match got {
                None => break,
                Some(0) if self.received == 0 => {
                    return Ok(Next::Close(Ok("listed the tables".to_owned())))
                }
                Some(0) => {
                    return Ok(Next::Close(Err(format!(
                        "closed in the middle of an update (after {} bytes)",
                        self.received
                    ))))
                }
                Some(n) => {
                    self.received += n;
                    if let Err(e) = self.update.feed(&buf[..n]) {
                        return Ok(Next::Close(Err(format!("bad update: {e}"))));
                    }
                }
            }
        }
        Ok(Next::Continue)
    }
}

/// The direction of a client's table, or why there is none here.
fn direction_of(pif: Pif, mode: Mode) -> Result<Direction, String> {
    match (pif, mode) {
        (Pif::Host, _) => Ok(Direction::Inbound),
        (Pif::Splice, Mode::Pasta) => Ok(Direction::Outbound),
        _ => Err(format!("Received rules for non-existent table {pif}")),
    }
}

/// Replaces every table of `tables` in one step, or none: all are checked first; a port in
/// use while a later one is opened puts the earlier ones back.
fn apply_update(
    tables: Vec<ReceivedTable>,
    engine: &mut Engine,
    sockets: &mut Sockets,
    mut auto: Option<&mut AutoForward>,
) -> Result<String, String> {
    let mode = engine.config().mode;
    let mut changes: Vec<(Direction, ForwardTable)> = Vec::new();
    for received in &tables {
        let direction = direction_of(received.pif, mode)?;
        let table = received
            .to_table()
            .map_err(|e| format!("{} table: {e}", received.pif))?;
        if engine.forwards().table(direction) == &table {
            continue;
        }
        engine
            .plan_forwards(direction, table.clone())
            .map_err(|e| format!("{} table: {e}", received.pif))?;
        changes.push((direction, table));
    }
    if changes.is_empty() {
        return Ok("no change".to_owned());
    }
    let mut done: Vec<(Direction, ForwardTable)> = Vec::new();
    for (direction, table) in changes {
        let old = engine.forwards().table(direction).clone();
        if let Err(e) =
            forwards::apply_forwards(engine, sockets, auto.as_deref_mut(), direction, table)
        {
            for (direction, old) in done.into_iter().rev() {
                if let Err(e) =
                    forwards::apply_forwards(engine, sockets, auto.as_deref_mut(), direction, old)
                {
                    log::error!(
                        "cannot restore the {} forwarding table: {e}",
                        direction.pif_name()
                    );
                }
            }
            return Err(format!("{} table: {e}", direction.pif_name()));
        }
        done.push((direction, old));
    }
    let names: Vec<&str> = done.iter().map(|(d, _)| d.pif_name()).collect();
    Ok(format!("forwarding changed ({})", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use sans_io::config::derive::derive;
    use sans_io::config::NetOptions;
    use sans_io::control::encode_update_table;
    use sans_io::control::write_end;
    use sans_io::flow::Proto;
    use sans_io::fwd::rule::ForwardRule;
    use sans_io::fwd::PortSpec;

    use super::*;
    use crate::pasta::engine_for;

    /// A passt engine forwarding nothing.
    fn passt_engine() -> Engine {
        let mut opts = NetOptions::new(Mode::Passt);
        for m in [&mut opts.tcp_in, &mut opts.udp_in] {
            m.add(PortSpec::None).unwrap();
        }
        let config = derive(&opts, &Default::default(), &Default::default())
            .unwrap()
            .config;
        engine_for(config).unwrap()
    }

    /// What a client sends to replace the inbound table with `rules`.
    fn update(rules: &[ForwardRule]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_update_table(Pif::Host, rules, &mut out).unwrap();
        write_end(&mut out);
        out
    }

    /// Reads the listing a new client gets; its tables.
    fn read_listing(client: &mut UnixStream) -> Vec<ReceivedTable> {
        let mut tables = TablesBuilder::new(Stream::Listing);
        let mut buf = [0u8; 4096];
        while !tables.is_done() {
            let n = client
                .read(&mut buf[..tables.wanted().clamp(1, 4096)])
                .unwrap();
            assert!(n > 0, "the server closed before the end of the tables");
            tables.feed(&buf[..n]).unwrap();
        }
        tables.into_tables()
    }

    /// Whether the server has closed `client`: reading to the end doesn't block.
    fn closed(client: &mut UnixStream) -> bool {
        client.set_nonblocking(true).unwrap();
        client.read_to_end(&mut Vec::new()).is_ok()
    }

    #[test]
    fn one_client_at_a_time_an_update_applied_whole_garbage_and_idle_ones_dropped() {
        // SAFETY: plain system call.
        if unsafe { libc::geteuid() } != 0 {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "needs root");
            eprintln!("\n*** SKIPPED: needs root (a network namespace of its own) ***\n");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: this thread only: the listener opened below lives in a namespace of ours.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let dir = std::env::temp_dir().join(format!("ctl-unit-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ctl.sock");
            let mut engine = passt_engine();
            let mut sockets = Sockets::new();
            let reactor = Reactor::new(&[]).unwrap();
            let mut server = ControlServer::bind(&path).unwrap();
            server.attach(&reactor).unwrap();
            let now = os_shim::reactor::monotonic_now();
            // One event on one of the server's descriptors, as the loop hands it over.
            macro_rules! step {
                ($token:expr) => {
                    server.ready($token, now, &mut engine, &mut sockets, None)
                };
            }

            // A client lists, a second one waits meanwhile, then sends an update.
            let mut first = UnixStream::connect(&path).unwrap();
            let mut second = UnixStream::connect(&path).unwrap();
            step!(TOKEN_CONTROL_LISTENER);
            let listed = read_listing(&mut first);
            assert_eq!(listed.len(), 1, "passt has only the inbound table");
            assert!(listed[0].rules.is_empty());
            assert!(server.deadline().is_some());
            // The second waits in the backlog: nothing for it while the first is served.
            step!(TOKEN_CONTROL_LISTENER);
            second.set_nonblocking(true).unwrap();
            let e = second.read(&mut [0; 1]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            second.set_nonblocking(false).unwrap();
            drop(first);
            step!(TOKEN_CONTROL_CLIENT);
            assert_eq!(server.deadline(), None, "the first client is done");
            step!(TOKEN_CONTROL_LISTENER);
            read_listing(&mut second);
            let rule = ForwardRule::ports(Proto::Tcp, 18080, 18080);
            second
                .write_all(&update(std::slice::from_ref(&rule)))
                .unwrap();
            step!(TOKEN_CONTROL_CLIENT);
            assert!(closed(&mut second));
            drop(second);
            assert_eq!(
                engine.forwards().table(Direction::Inbound).rules(),
                std::slice::from_ref(&rule)
            );

            // Garbage: dropped, nothing changed.
            let mut bad = UnixStream::connect(&path).unwrap();
            step!(TOKEN_CONTROL_LISTENER);
            read_listing(&mut bad);
            bad.write_all(&[0xff; 64]).unwrap();
            step!(TOKEN_CONTROL_CLIENT);
            assert_eq!(
                server.deadline(),
                None,
                "the garbage client is still served"
            );

            // An update naming a table passt has not: refused as a whole.
            let mut wrong = UnixStream::connect(&path).unwrap();
            step!(TOKEN_CONTROL_LISTENER);
            read_listing(&mut wrong);
            let mut bytes = Vec::new();
            encode_update_table(Pif::Host, &[], &mut bytes).unwrap();
            encode_update_table(Pif::Splice, &[], &mut bytes).unwrap();
            write_end(&mut bytes);
            wrong.write_all(&bytes).unwrap();
            step!(TOKEN_CONTROL_CLIENT);
            assert!(closed(&mut wrong));

            // A silent one: dropped at its deadline, not before.
            let _idle = UnixStream::connect(&path).unwrap();
            step!(TOKEN_CONTROL_LISTENER);
            let deadline = server.deadline().expect("served");
            assert_eq!(deadline, now + CLIENT_DEADLINE);
            server.check_deadline(now + Duration::from_secs(1));
            assert_eq!(server.deadline(), Some(deadline));
            server.check_deadline(deadline);
            assert_eq!(server.deadline(), None);
            assert_eq!(engine.forwards().table(Direction::Inbound).rules(), [rule]);
            let _ = std::fs::remove_dir_all(&dir);
        })
        .join()
        .unwrap();
    }
}
