//! A scripted in-memory `HostSockets` for the TCP tests, and a harness driving an engine with
//! it: the guest's frames go in, the engine's come out parsed, socket calls are recorded.
//! Misuse of a socket by the engine (use after close, closing twice, discarding more than
//! was received) is recorded and checked by [`H::check`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sans_io::config::host::scope;
use sans_io::config::{Config, Mode, NetOptions};
use sans_io::engine::{Engine, EngineOptions};
use sans_io::flow::{send_each, Bind, CloseSockets, Peeked, SockEvent, SockRef, StreamSockets};
use sans_io::time::Instant;
use sans_io::wire::build::Route;
use sans_io::wire::parse;
use sans_io::wire::tcp::{self as wtcp, flags, Header};
use sans_io::wire::{FrameQueue, MacAddr};

use crate::common;

pub const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
pub const GUEST4: &str = "192.0.2.2";
pub const GATEWAY4: &str = "192.0.2.1";

/// One host socket as the mock keeps it.
#[derive(Debug, Default, Clone)]
pub struct MockSock {
    pub dst: Option<SocketAddr>,
    pub bind_addr: Option<IpAddr>,
    pub mss: Option<u16>,
    /// Received from the host peer, not yet discarded.
    pub rx: RxQueue,
    /// Total bytes discarded so far.
    pub discarded: usize,
    /// The host peer closed its side (the test reports `PeerClosed` itself, or sets
    /// [`Mock::eof_in_peek`]).
    pub eof: bool,
    /// Everything the engine sent on the socket.
    pub written: Vec<u8>,
    /// Room left in the send buffer: `send` takes at most this, and uses it up.
    pub space: u32,
    pub shut: bool,
    /// Closed, and whether with a reset.
    pub closed: Option<bool>,
    pub interest: (bool, bool),
    /// (offset, bytes returned) of each peek.
    pub peeks: Vec<(usize, usize)>,
    /// Calls that wrote: `send`, and `send_vectored` as one.
    pub sends: usize,
    /// Of those, `send_vectored` calls.
    pub vectored: usize,
}

#[derive(Debug, Default)]
pub struct Mock {
    pub socks: BTreeMap<u32, MockSock>,
    next: u32,
    /// `tcp_connect` fails at once with ECONNREFUSED.
    pub refuse: bool,
    /// Send space of new sockets.
    pub default_space: u32,
    /// A peek that reaches the end of a socket's `rx` after its `eof` says so, as the OS
    /// shim's does; otherwise only `PeerClosed` tells the engine.
    pub eof_in_peek: bool,
    pub misuse: Vec<String>,
}

impl Mock {
    pub fn new() -> Mock {
        Mock {
            default_space: 1 << 20,
            next: 100,
            ..Mock::default()
        }
    }

    pub fn sock(&mut self, s: SockRef) -> &mut MockSock {
        self.socks.get_mut(&s.0).expect("no such socket")
    }

    /// A socket the test makes, as if accepted on a listener.
    pub fn accepted(&mut self) -> SockRef {
        let s = SockRef(self.next);
        self.next += 1;
        self.socks.insert(
            s.0,
            MockSock {
                space: self.default_space,
                // Both interests off, as a driver hands an accepted socket over.
                interest: (false, false),
                ..MockSock::default()
            },
        );
        s
    }

    fn live(&mut self, s: SockRef, what: &str) -> Option<&mut MockSock> {
        match self.socks.get_mut(&s.0) {
            Some(sock) if sock.closed.is_none() => Some(sock),
            Some(_) => {
                self.misuse.push(format!("{what} on closed socket {}", s.0));
                None
            }
            None => {
                self.misuse
                    .push(format!("{what} on unknown socket {}", s.0));
                None
            }
        }
    }
}

impl CloseSockets for Mock {
    fn close(&mut self, s: SockRef, reset: bool) {
        if let Some(sock) = self.live(s, "close") {
            sock.closed = Some(reset);
        }
    }
}

impl StreamSockets for Mock {
    fn tcp_connect(
        &mut self,
        dst: SocketAddr,
        bind: Bind<'_>,
        mss: Option<u16>,
    ) -> io::Result<SockRef> {
        if self.refuse {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let s = self.accepted();
        let sock = self.sock(s);
        sock.dst = Some(dst);
        sock.bind_addr = bind.addr;
        sock.mss = mss;
        Ok(s)
    }

    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let Some(sock) = self.live(s, "send") else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if sock.shut {
            let m = format!("send after shutdown on {}", s.0);
            self.misuse.push(m);
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        sock.sends += 1;
        let n = data.len().min(sock.space as usize);
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        sock.written.extend_from_slice(&data[..n]);
        sock.space -= n as u32;
        Ok(n)
    }

    /// Consecutive sends stopping at the first short one, counted as one call.
    fn send_vectored(&mut self, s: SockRef, data: &[&[u8]]) -> io::Result<usize> {
        let sends_before = self.socks.get(&s.0).map(|sock| sock.sends);
        let sent = send_each(data, |slice| self.send(s, slice));
        if let (Some(sock), Some(before)) = (self.socks.get_mut(&s.0), sends_before) {
            sock.vectored += 1;
            sock.sends = before + 1;
        }
        sent
    }

    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        let eof_in_peek = self.eof_in_peek;
        let Some(sock) = self.live(s, "peek") else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let avail = sock.rx.get(offset..).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        sock.peeks.push((offset, n));
        let eof = eof_in_peek && sock.eof && n == avail.len();
        Ok(Peeked { n, eof })
    }

    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        let Some(sock) = self.live(s, "discard") else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if len > sock.rx.len() {
            let m = format!("discard {len} of {} on {}", sock.rx.len(), s.0);
            self.misuse.push(m);
            return Err(io::ErrorKind::InvalidInput.into());
        }
        sock.rx.consume(len);
        sock.discarded += len;
        Ok(())
    }

    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        let Some(sock) = self.live(s, "send_space") else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        Ok(sock.space)
    }

    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        let Some(sock) = self.live(s, "shutdown") else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let twice = sock.shut;
        sock.shut = true;
        if twice {
            self.misuse.push(format!("shutdown twice on {}", s.0));
        }
        Ok(())
    }

    fn set_interest(&mut self, s: SockRef, readable: bool, writable: bool) {
        if let Some(sock) = self.live(s, "set_interest") {
            sock.interest = (readable, writable);
        }
    }
}

// The TCP mock has no UDP nor ping: flows fail to open (the core counts that).
sans_io::refuse_datagrams!(Mock);

/// A segment the engine sent to the guest, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub payload: Vec<u8>,
}

impl Seg {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
    /// Exactly these flags.
    pub fn is(&self, f: u8) -> bool {
        self.flags == f
    }
}

pub fn is_tcp(frame: &[u8]) -> bool {
    let Ok(eth) = parse::ethernet(frame) else {
        return false;
    };
    match eth.ethertype {
        parse::ethertype::IPV4 => {
            parse::ipv4(eth.payload).is_ok_and(|ip| ip.protocol == parse::ip_proto::TCP)
        }
        parse::ethertype::IPV6 => {
            parse::ipv6(eth.payload).is_ok_and(|ip| ip.next_header == parse::ip_proto::TCP)
        }
        _ => false,
    }
}

/// Parses a frame from the engine; panics (failing the test) on anything but valid TCP.
pub fn parse_seg(frame: &[u8]) -> Seg {
    let eth = parse::ethernet(frame).unwrap();
    let (src, dst, l4) = match eth.ethertype {
        parse::ethertype::IPV4 => {
            let ip = parse::ipv4(eth.payload).unwrap();
            (IpAddr::V4(ip.src), IpAddr::V4(ip.dst), ip.payload)
        }
        _ => {
            let ip = parse::ipv6(eth.payload).unwrap();
            (IpAddr::V6(ip.src), IpAddr::V6(ip.dst), ip.payload)
        }
    };
    assert_eq!(
        sans_io::wire::checksum::transport(src, dst, parse::ip_proto::TCP, l4),
        0,
        "bad TCP checksum"
    );
    let s = wtcp::parse(l4).unwrap();
    let o = wtcp::syn_options(s.options);
    Seg {
        src: SocketAddr::new(src, s.src_port),
        dst: SocketAddr::new(dst, s.dst_port),
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        window: s.window,
        mss: o.mss,
        wscale: o.wscale,
        payload: s.payload.to_vec(),
    }
}

/// The configuration the TCP tests run under: pasta on a host with 192.0.2.2/24 and
/// 2001:db8::2/64, gateways 192.0.2.1 and fe80::1, after `tweak`.
pub fn config(tweak: impl FnOnce(&mut NetOptions)) -> Config {
    let host = common::host_net(
        MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]),
        &[
            ("192.0.2.2", 24, scope::UNIVERSE),
            ("2001:db8::2", 64, scope::UNIVERSE),
        ],
        &["192.0.2.1", "fe80::1"],
    );
    let mut opts = NetOptions::new(Mode::Pasta);
    tweak(&mut opts);
    common::derive_config(&opts, &host)
}

/// An engine, the mock, the clock and the queue between them.
pub struct H {
    pub engine: Engine,
    pub io: Mock,
    pub out: FrameQueue,
    pub now: Instant,
    /// Segments drained from `out` between timer runs, as a driver would write them.
    drained: Vec<Seg>,
    /// Inputs held for the next batch ([`H::flush`] runs it).
    pending: Vec<Input>,
    /// Times [`H::advance`] woke for a deadline, as a driver's timer would fire.
    pub wakeups: u64,
}

/// An input held for the next batch.
enum Input {
    Frame(Vec<u8>),
    Socket(SockRef, SockEvent),
    Accept(SockRef, SocketAddr, SocketAddr),
}

impl H {
    pub fn new() -> H {
        H::with(config(|_| {}), EngineOptions::default())
    }

    pub fn with(config: Config, options: EngineOptions) -> H {
        let now = Instant::from_millis(1000);
        H {
            engine: Engine::with_options(config, 7, now, options),
            io: Mock::new(),
            out: FrameQueue::new(),
            now,
            drained: Vec::new(),
            pending: Vec::new(),
            wakeups: 0,
        }
    }

    /// A guest frame carrying `h` and `payload` from `src` to `dst`, held for the next batch.
    pub fn send_raw(&mut self, src: SocketAddr, dst: SocketAddr, h: Header, payload: &[u8]) {
        let frame = self.tcp_frame(src, dst, h, payload);
        self.pending.push(Input::Frame(frame));
    }

    /// The guest frame carrying `h` and `payload` from `src` to `dst`.
    pub fn tcp_frame(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        h: Header,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut q = FrameQueue::new();
        let route = Route {
            src_mac: GUEST_MAC,
            dst_mac: self.engine.config().our_mac,
            src: src.ip(),
            dst: dst.ip(),
        };
        let h = Header {
            src_port: src.port(),
            dst_port: dst.port(),
            ..h
        };
        wtcp::frame(&mut q, &route, &h, payload);
        q.get(0).unwrap().to_vec()
    }

    /// A guest frame, held for the next batch.
    pub fn frame_bytes(&mut self, frame: &[u8]) {
        self.pending.push(Input::Frame(frame.to_vec()));
    }

    /// A socket event, held for the next batch.
    pub fn event_held(&mut self, s: SockRef, ev: SockEvent) {
        self.pending.push(Input::Socket(s, ev));
    }

    /// Runs the inputs held so far as one batch, ending with its flush.
    pub fn flush(&mut self) {
        let mut batch = self.engine.batch(self.now, &mut self.io, &mut self.out);
        for input in self.pending.drain(..) {
            match input {
                Input::Frame(frame) => batch.frame(&frame),
                Input::Socket(s, ev) => batch.socket(s, ev),
                Input::Accept(s, peer, local) => batch.accept(s, peer, local),
            };
        }
        batch.finish();
    }

    /// A socket event, in a batch with what was held.
    pub fn event(&mut self, s: SockRef, ev: SockEvent) {
        self.event_held(s, ev);
        self.flush();
    }

    /// An accepted connection, in a batch with what was held.
    pub fn accept(&mut self, s: SockRef, peer: &str, local: &str) {
        let input = Input::Accept(s, peer.parse().unwrap(), local.parse().unwrap());
        self.pending.push(input);
        self.flush();
    }

    /// Moves the clock by `d`, running every deadline on the way (held inputs first, at the
    /// current time).
    pub fn advance(&mut self, d: Duration) {
        if !self.pending.is_empty() {
            self.flush();
        }
        let end = self.now + d;
        while let Some(t) = self.engine.poll_timeout().filter(|&t| t <= end) {
            self.now = t.max(self.now);
            self.wakeups += 1;
            self.engine
                .batch(self.now, &mut self.io, &mut self.out)
                .timeout();
            // A driver writes the queued frames out before waiting again.
            let segs: Vec<Seg> = self
                .out
                .iter()
                .filter(|f| is_tcp(f))
                .map(parse_seg)
                .collect();
            self.drained.extend(segs);
            self.out.clear();
        }
        self.now = end;
    }

    /// What TCP segments the engine sent since the last call (other frames, such as router
    /// advertisements, are skipped).
    pub fn take(&mut self) -> Vec<Seg> {
        let mut segs = std::mem::take(&mut self.drained);
        segs.extend(self.out.iter().filter(|f| is_tcp(f)).map(parse_seg));
        self.out.clear();
        segs
    }

    /// The one socket the engine opened most recently.
    pub fn last_sock(&self) -> SockRef {
        SockRef(*self.io.socks.keys().last().expect("no socket"))
    }

    pub fn check(&self) {
        assert!(
            self.io.misuse.is_empty(),
            "socket misuse: {:?}",
            self.io.misuse
        );
    }
}

/// The guest's end of one connection: what it sent and what it expects next.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub me: SocketAddr,
    pub peer: SocketAddr,
    /// Next sequence number the guest sends.
    pub seq: u32,
    /// Next sequence number the guest expects (what it acknowledges).
    pub ack: u32,
    /// The window field the guest advertises.
    pub window: u16,
}

impl Guest {
    pub fn new(me: &str, peer: &str) -> Guest {
        Guest {
            me: me.parse().unwrap(),
            peer: peer.parse().unwrap(),
            seq: 1_000_000,
            ack: 0,
            window: 65535,
        }
    }

    pub fn header(&self, fl: u8) -> Header {
        Header {
            seq: self.seq,
            ack: if fl & flags::ACK != 0 { self.ack } else { 0 },
            flags: fl,
            window: self.window,
            ..Header::default()
        }
    }

    /// Sends a segment with `fl` and `payload`, advancing `seq`; not flushed.
    pub fn send(&mut self, h: &mut H, fl: u8, payload: &[u8]) {
        let hdr = self.header(fl);
        h.send_raw(self.me, self.peer, hdr, payload);
        self.seq = self
            .seq
            .wrapping_add(payload.len() as u32)
            .wrapping_add(u32::from(fl & (flags::SYN | flags::FIN) != 0));
    }

    /// A SYN with MSS and window scale options (`wscale` None: no option).
    pub fn syn(&mut self, h: &mut H, mss: u16, wscale: Option<u8>) {
        let hdr = Header {
            mss: Some(mss),
            wscale,
            ..self.header(flags::SYN)
        };
        h.send_raw(self.me, self.peer, hdr, &[]);
        self.seq = self.seq.wrapping_add(1);
        h.flush();
    }

    /// Data with ACK, flushed.
    pub fn data(&mut self, h: &mut H, payload: &[u8]) {
        self.send(h, flags::ACK | flags::PSH, payload);
        h.flush();
    }

    /// A pure ACK of everything received so far, flushed.
    pub fn ack_all(&mut self, h: &mut H) {
        self.send(h, flags::ACK, &[]);
        h.flush();
    }

    /// Takes in what the engine sent to this connection (in order, as a real guest would if
    /// nothing is lost): advances `ack` over in-order payload and FIN; returns the payload.
    pub fn receive(&mut self, segs: &[Seg]) -> Vec<u8> {
        let mut data = Vec::new();
        for s in segs.iter().filter(|s| s.dst == self.me) {
            if s.has(flags::SYN) {
                self.ack = s.seq.wrapping_add(1);
                continue;
            }
            if s.seq == self.ack {
                data.extend_from_slice(&s.payload);
                self.ack = self.ack.wrapping_add(s.payload.len() as u32);
                if s.has(flags::FIN) {
                    self.ack = self.ack.wrapping_add(1);
                }
            } else if s.has(flags::FIN) && s.payload.is_empty() && s.seq.wrapping_add(1) == self.ack
            {
                // A retransmitted FIN we have.
            }
        }
        data
    }
}

/// An established outbound connection from the guest at 192.0.2.2:40000 to 203.0.113.5:80,
/// guest MSS 1460 and window scale `ws`; returns the guest end and the socket.
pub fn connected(h: &mut H, ws: Option<u8>) -> (Guest, SockRef) {
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.syn(h, 1460, ws);
    let s = h.last_sock();
    h.event(s, SockEvent::Connected);
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].is(flags::SYN | flags::ACK));
    g.receive(&segs);
    g.ack_all(h);
    assert!(h.take().is_empty());
    (g, s)
}

/// Proptest cases: `default`, or `PROPTEST_CASES` from the environment for longer runs.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl MockSock {
    /// Whether the guest's FIN reached the host peer: a `shutdown`, or a graceful close with
    /// nothing unread (which sends the FIN itself; unread data would make it a reset).
    pub fn fin_passed_on(&self) -> bool {
        self.shut || (self.closed == Some(false) && self.rx.is_empty())
    }
}

/// A receive queue: bytes appended at the back, consumed from the front without moving the
/// rest each time (a 20 MiB transfer would otherwise copy gigabytes in a debug build).
#[derive(Debug, Default, Clone)]
pub struct RxQueue {
    buf: Vec<u8>,
    head: usize,
}

impl RxQueue {
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.buf.extend(bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unconsumed bytes from `range.start` on.
    pub fn get(&self, range: std::ops::RangeFrom<usize>) -> Option<&[u8]> {
        self.buf[self.head..].get(range)
    }

    /// Drops `n` bytes from the front; compacts once half the buffer is consumed.
    pub fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head > self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }
}
