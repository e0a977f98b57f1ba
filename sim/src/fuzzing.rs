//! What the fuzz targets run (fuzz/fuzz_targets/*.rs are one-line wrappers), so that the
//! same functions also run in `cargo test` over every seed (sim/tests/fuzz_corpus.rs) and a
//! crash found by fuzzing is a plain test away.
//!
//! Every harness checks more than "no panic": frames the engine sends must decode whole,
//! fit the MTU and carry valid checksums, and the engine must keep the socket contract
//! (no discard beyond what a socket holds, no call on a closed socket).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sans_io::config::Config;
use sans_io::engine::{Engine, EngineOptions};
use sans_io::flow::{
    Bind, CloseSockets, DgramSockets, NoSockets, Peeked, PingSockets, SockEvent, SockRef,
    StreamSockets,
};
use sans_io::time::{Duration, Instant};
use sans_io::wire::FrameQueue;

use crate::fields;
use crate::replay::Setup;

/// Inputs longer than this are cut: the harnesses aim at logic, not at memory.
pub const MAX_INPUT: usize = 1 << 20;
/// Operations per engine input at most.
pub const MAX_OPS: usize = 4096;

/// The port every harness forwards in (TCP; the engine target's UDP listeners too).
const FORWARDED_PORT: u16 = 8080;

/// The configuration every harness runs with: the capture lab (IPv4 and IPv6, DNS servers,
/// a search domain), a 1500-byte MTU, `FORWARDED_PORT` forwarded in.
pub fn config() -> Config {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(make_config).clone()
}

fn make_config() -> Config {
    let mut setup = Setup::capture_lab();
    setup.opts.mtu = Some(1500);
    setup
        .opts
        .tcp_in
        .add(FORWARDED_PORT.to_string().parse().expect("port spec"))
        .expect("forward");
    setup
        .config(&[])
        .expect("the fuzzing configuration derives")
}

pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Checks a frame the engine sent.
fn check_output(config: &Config, frame: &[u8]) {
    let mtu = usize::from(config.mtu.unwrap_or(65520));
    assert!(
        frame.len() <= mtu + 14,
        "frame of {} bytes over the MTU {mtu}",
        frame.len()
    );
    assert_eq!(frame.get(6..12), Some(&config.our_mac.0[..]), "source MAC");
    let d = fields::decode(frame);
    assert!(
        !d.fields.iter().any(|(n, _)| n == "truncated"),
        "our frame doesn't decode whole: {:?}",
        d.fields
    );
    let bad = fields::checksum_errors(frame);
    assert!(bad.is_empty(), "bad checksums {bad:?} in {}", d.summary);
}

fn drain(config: &Config, out: &mut FrameQueue) {
    for f in out.iter() {
        check_output(config, f);
    }
    out.clear();
}

/// Flow tables small enough to fill.
fn small_tables() -> EngineOptions {
    EngineOptions {
        max_tcp_flows: 16,
        max_udp_flows: 16,
        max_icmp_flows: 16,
        ..EngineOptions::default()
    }
}

/// A byte reader that yields zeros once the input runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        let (b, rest) = self
            .0
            .split_first()
            .map(|(b, r)| (*b, r))
            .unwrap_or((0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Operations of [`engine_ops`], for building seeds.
pub mod op {
    /// A guest frame: `FRAME len:u16le bytes`.
    pub const FRAME: u8 = 0;
    /// A socket event: `EVENT sock:u8 kind:u8` (Connected, Readable, Writable, PeerClosed,
    /// Error).
    pub const EVENT: u8 = 1;
    /// Data from the host peer: `DATA sock:u8 len:u16le bytes`, then Readable; with `len` 0 on
    /// a stream, the peer's end instead, told only by peeks that reach it.
    pub const DATA: u8 = 2;
    /// Time passes: `ADVANCE ms:u16le`; due timers fire.
    pub const ADVANCE: u8 = 3;
    /// `FLUSH`: the end of a batch.
    pub const FLUSH: u8 = 4;
    /// A connection to a forwarded port: `ACCEPT peer:u8 port:u16le`.
    pub const ACCEPT: u8 = 5;
    /// The room in sockets' send buffers: `ROOM kib:u16le`.
    pub const ROOM: u8 = 6;
    pub const COUNT: u8 = 7;
}

/// Encodes guest frames as [`engine_ops`] input: each frame, a flush, a millisecond.
pub fn encode_frames<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = Vec::new();
    for f in frames {
        let f = &f[..f.len().min(usize::from(u16::MAX))];
        v.push(op::FRAME);
        v.extend_from_slice(&(f.len() as u16).to_le_bytes());
        v.extend_from_slice(f);
        v.push(op::FLUSH);
        v.push(op::ADVANCE);
        v.extend_from_slice(&1u16.to_le_bytes());
    }
    v
}

#[derive(Debug, Default)]
struct FuzzSock {
    open: bool,
    stream: bool,
    /// Stream: bytes received, from the first not discarded.
    rx: VecDeque<u8>,
    /// Stream: the peer's end came after `rx`, told by peeks only.
    eof: bool,
    /// Datagram sockets: datagrams waiting.
    dgrams: VecDeque<Vec<u8>>,
    /// A UDP forwarding listener of this family (IPv6 if true): its datagrams come from
    /// peers the first payload byte picks.
    listener_v6: Option<bool>,
}

/// Host sockets driven by the fuzzer's operations: partial writes (the room is the fuzzer's
/// choice), data arriving in arbitrary pieces, events in arbitrary order.
#[derive(Debug)]
struct FuzzHost {
    socks: Vec<FuzzSock>,
    room: usize,
}

impl FuzzHost {
    fn open(&mut self, stream: bool) -> io::Result<SockRef> {
        if self.socks.len() >= 256 {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        self.socks.push(FuzzSock {
            open: true,
            stream,
            ..FuzzSock::default()
        });
        Ok(SockRef(self.socks.len() as u32 - 1))
    }
    fn get(&mut self, s: SockRef, call: &str) -> &mut FuzzSock {
        let sock = self
            .socks
            .get_mut(s.0 as usize)
            .unwrap_or_else(|| panic!("{call} on unknown socket {}", s.0));
        assert!(sock.open, "{call} on closed socket {}", s.0);
        sock
    }
}

impl CloseSockets for FuzzHost {
    fn close(&mut self, s: SockRef, _: bool) {
        self.get(s, "close").open = false;
    }
}

impl StreamSockets for FuzzHost {
    fn tcp_connect(&mut self, _: SocketAddr, _: Bind<'_>, _: Option<u16>) -> io::Result<SockRef> {
        self.open(true)
    }
    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let room = self.room;
        self.get(s, "send");
        if room == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(data.len().min(room))
    }
    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        let sock = self.get(s, "peek");
        let mut n = 0;
        for (dst, src) in buf.iter_mut().zip(sock.rx.iter().skip(offset)) {
            *dst = *src;
            n += 1;
        }
        let eof = sock.eof && offset + n >= sock.rx.len();
        Ok(Peeked { n, eof })
    }
    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        let sock = self.get(s, "discard");
        assert!(
            len <= sock.rx.len(),
            "discard of {len} bytes with {} held",
            sock.rx.len()
        );
        sock.rx.drain(..len);
        Ok(())
    }
    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        self.get(s, "send_space");
        Ok(self.room as u32)
    }
    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        self.get(s, "shutdown");
        Ok(())
    }
    fn set_interest(&mut self, s: SockRef, _: bool, _: bool) {
        self.get(s, "set_interest");
    }
}

impl DgramSockets for FuzzHost {
    fn udp_open(&mut self, _: Bind<'_>, _: SocketAddr) -> io::Result<SockRef> {
        self.open(false)
    }
    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        self.get(s, "udp_send");
        Ok(data.len())
    }
    fn udp_recv_from(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let sock = self.get(s, "udp_recv_from");
        let v6 = sock
            .listener_v6
            .unwrap_or_else(|| panic!("udp_recv_from on non-listener {}", s.0));
        let d = sock.dgrams.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        let pick = d.first().copied().unwrap_or(0) % 2;
        let peer = match (v6, pick) {
            (false, 0) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000),
            (false, _) => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40001),
            (true, 0) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40002),
            (true, _) => SocketAddr::new("2001:db8:2::9".parse().unwrap(), 40003),
        };
        Ok((n, peer))
    }
    fn udp_reply_open(
        &mut self,
        bound: SocketAddr,
        _: Option<&str>,
        _: SocketAddr,
    ) -> io::Result<SockRef> {
        assert_eq!(
            bound.port(),
            FORWARDED_PORT,
            "udp_reply_open at {bound}, where no listener was"
        );
        self.open(false)
    }
    fn udp_send_via(&mut self, listener: SockRef, _: SocketAddr, data: &[u8]) -> io::Result<usize> {
        assert!(
            self.get(listener, "udp_send_via").listener_v6.is_some(),
            "udp_send_via on non-listener {}",
            listener.0
        );
        Ok(data.len())
    }
    fn udp_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        let d = self
            .get(s, "udp_recv")
            .dgrams
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl PingSockets for FuzzHost {
    fn ping_open(&mut self, _: Bind<'_>, _: IpAddr, id: u16) -> io::Result<(SockRef, u16)> {
        Ok((self.open(false)?, id))
    }
    fn ping_send(&mut self, s: SockRef, msg: &[u8]) -> io::Result<usize> {
        self.udp_send(s, msg)
    }
    fn ping_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        self.udp_recv(s, buf)
    }
}

/// Frames, socket events, data and time into one engine, in the order the input says
/// (see [`op`]).
pub fn engine_ops(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let config = config();
    let mut now = Instant::from_millis(1);
    let mut engine = Engine::with_options(config.clone(), 7, now, small_tables());
    let mut host = FuzzHost {
        socks: Vec::new(),
        room: 64 * 1024,
    };
    let mut out = FrameQueue::new();
    // UDP follows TCP's forwarded port: a listener per family, fed by DATA.
    for (v6, local) in [
        (
            false,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), FORWARDED_PORT),
        ),
        (
            true,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), FORWARDED_PORT),
        ),
    ] {
        let s = host.open(false).expect("room for listeners");
        host.socks[s.0 as usize].listener_v6 = Some(v6);
        engine.add_udp_listener(s, local, None);
    }
    let mut r = Reader(data);
    let mut ops = 0;
    // Inputs go into one batch until FLUSH or ADVANCE ends it.
    let mut batch = engine.batch(now, &mut host, &mut out);
    while !r.done() && ops < MAX_OPS {
        ops += 1;
        // A socket named by the input, among the open ones.
        let pick = |r: &mut Reader, host: &FuzzHost| -> Option<SockRef> {
            let open: Vec<u32> = (0..host.socks.len() as u32)
                .filter(|&i| host.socks[i as usize].open)
                .collect();
            let i = usize::from(r.u8());
            (!open.is_empty()).then(|| SockRef(open[i % open.len()]))
        };
        match r.u8() % op::COUNT {
            op::FRAME => {
                let len = usize::from(r.u16());
                let frame = r.bytes(len).to_vec();
                batch.frame(&frame);
            }
            op::EVENT => {
                let s = pick(&mut r, batch.io());
                let ev = match r.u8() % 5 {
                    0 => SockEvent::Connected,
                    1 => SockEvent::Readable,
                    2 => SockEvent::Writable,
                    3 => SockEvent::PeerClosed,
                    _ => SockEvent::Error(104),
                };
                if let Some(s) = s {
                    batch.socket(s, ev);
                }
            }
            op::DATA => {
                let s = pick(&mut r, batch.io());
                let len = usize::from(r.u16());
                let bytes = r.bytes(len).to_vec();
                if let Some(s) = s {
                    let sock = &mut batch.io().socks[s.0 as usize];
                    if sock.stream && bytes.is_empty() {
                        // The peer's end, which only the next peek tells.
                        sock.eof = true;
                    } else if sock.stream {
                        sock.rx.extend(bytes);
                    } else if sock.dgrams.len() < 64 {
                        sock.dgrams.push_back(bytes);
                    }
                    batch.socket(s, SockEvent::Readable);
                }
            }
            op::ADVANCE => {
                batch.finish();
                drain(&config, &mut out);
                now = now + Duration::from_millis(u64::from(r.u16()));
                for _ in 0..64 {
                    match engine.poll_timeout() {
                        Some(t) if t <= now => {
                            engine.batch(now, &mut host, &mut out).timeout();
                            drain(&config, &mut out);
                        }
                        _ => break,
                    }
                }
                batch = engine.batch(now, &mut host, &mut out);
            }
            op::FLUSH => {
                batch.finish();
                batch = engine.batch(now, &mut host, &mut out);
            }
            op::ACCEPT => {
                let peer = match r.u8() % 4 {
                    0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000),
                    1 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40001),
                    2 => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40002),
                    _ => SocketAddr::new("2001:db8:2::9".parse().unwrap(), 40003),
                };
                let port = r.u16();
                let local = SocketAddr::new(
                    if peer.is_ipv4() {
                        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2))
                    } else {
                        "2001:db8:1::2".parse().unwrap()
                    },
                    port,
                );
                if let Ok(s) = batch.io().open(true) {
                    batch.accept(s, peer, local);
                }
            }
            _ => batch.io().room = usize::from(r.u16()) * 1024 / 64,
        }
        // Frames may be written out mid-batch.
        drain(&config, batch.queue());
    }
    batch.finish();
    drain(&config, &mut out);
}

/// Raw bytes into every wire parser, and into the replay's own decoder.
pub fn wire(data: &[u8]) {
    use sans_io::wire::{dns_name, gso, parse, tcp};
    let _ = parse::ethernet(data);
    let _ = parse::ipv4(data);
    let _ = parse::ipv6(data);
    let _ = parse::udp(data);
    let _ = tcp::parse(data);
    let _ = tcp::syn_options(data);
    for start in [0, 1, data.len() / 2] {
        let _ = dns_name::decode(data, start, dns_name::Pointers::Allowed);
        let _ = dns_name::decode(data, start, dns_name::Pointers::Refused);
    }
    let _ = fields::decode(data);
    let _ = fields::checksum_errors(data);
    // The layers as the engine peels them.
    if let Ok(eth) = parse::ethernet(data) {
        let _ = parse::ipv4(eth.payload);
        let _ = parse::ipv6(eth.payload);
    }
    // Runs of frames for the tap, among frames cut from the bytes: a run found has its
    // headers written from its first frame.
    let frames: Vec<&[u8]> = data.split(|&b| b == 0xa5).collect();
    for start in 0..frames.len() {
        if let Some(run) = gso::run(frames[start..].iter().copied()) {
            let mut headers = [0u8; gso::MAX_HEADER_LEN];
            let last = frames[start + run.frames - 1];
            assert!(gso::run_headers(frames[start], last, &run, &mut headers).is_some());
            assert!(run.frames >= 2 && run.frames <= gso::MAX_SEGMENTS);
        }
    }
    // The bytes as a UDP run a device handed over whole, cut at a size the first bytes
    // choose: every datagram cut out parses as the engine will take it.
    let size = usize::from(u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        0x02,
    ]));
    let (mut out, mut lens) = (Vec::new(), Vec::new());
    for size in [1, size, 1400] {
        out.clear();
        lens.clear();
        if let Some(n) = gso::cut_udp_run(data, size, &mut out, &mut lens) {
            assert!((1..=gso::MAX_CUT_SEGMENTS).contains(&n) && n == lens.len());
            let mut at = 0;
            for &len in &lens {
                let eth = parse::ethernet(&out[at..at + len]).expect("Ethernet");
                let l4 = match parse::ipv4(eth.payload) {
                    Ok(ip) => ip.payload,
                    Err(_) => parse::ipv6(eth.payload).expect("IP").payload,
                };
                assert!(parse::udp(l4).unwrap().payload.len() <= size);
                at += len;
            }
        }
    }
}

fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let dst_mac = [0xff; 6];
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (28 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let ck = fields::checksum(&[&f[14..34]]);
    f[24..26].copy_from_slice(&ck.to_be_bytes());
    let ulen = (8 + payload.len()) as u16;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&ulen.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&ulen.to_be_bytes());
    let ck = fields::checksum(&[&pseudo, &f[34..]]);
    let ck = if ck == 0 { 0xffff } else { ck };
    f[40..42].copy_from_slice(&ck.to_be_bytes());
    f
}

fn ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop: u8, l4: &[u8], ck_at: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + l4.len());
    let dst_mac = [
        0x33,
        0x33,
        dst.octets()[12],
        dst.octets()[13],
        dst.octets()[14],
        dst.octets()[15],
    ];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, hop]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next]);
    if ck_at + 2 <= l4.len() {
        f[54 + ck_at..54 + ck_at + 2].copy_from_slice(&[0, 0]);
        let ck = fields::checksum(&[&pseudo, &f[54..]]);
        let ck = if ck == 0 && next == 17 { 0xffff } else { ck };
        f[54 + ck_at..54 + ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    }
    f
}

const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);

/// Runs one well-formed frame (valid headers and checksums around the fuzzed part) through
/// an engine with no host sockets, checking what it answers.
fn one_frame(frame: &[u8]) {
    let config = config();
    let now = Instant::from_millis(1);
    let mut engine = Engine::with_options(config.clone(), 7, now, small_tables());
    let mut out = FrameQueue::new();
    engine.batch(now, &mut NoSockets, &mut out).frame(frame);
    drain(&config, &mut out);
}

/// A DHCP message (from the BOOTP header on) from the guest.
pub fn dhcp(payload: &[u8]) {
    let payload = &payload[..payload.len().min(9000)];
    one_frame(&ipv4_udp(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        payload,
    ));
}

/// A DHCPv6 message (from the message type on) from the guest.
pub fn dhcpv6(payload: &[u8]) {
    let payload = &payload[..payload.len().min(9000)];
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&546u16.to_be_bytes());
    udp.extend_from_slice(&547u16.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
    one_frame(&ipv6_frame(GUEST_LL, dst, 17, 1, &udp, 6));
}

/// An NDP message from the guest: the first byte picks the type (RS, RA, NS, NA, redirect),
/// the rest is the message after its checksum (fixed fields, then options).
pub fn ndp(data: &[u8]) {
    let data = &data[..data.len().min(9000)];
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ty = 133 + pick % 5;
    let mut icmp = vec![ty, 0, 0, 0];
    icmp.extend_from_slice(body);
    let dst = match ty {
        133 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        135 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1),
        _ => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    };
    let src = if pick & 0x80 != 0 {
        Ipv6Addr::UNSPECIFIED
    } else {
        GUEST_LL
    };
    one_frame(&ipv6_frame(src, dst, 58, 255, &icmp, 2));
}

/// Any bytes as a capture, replayed: a bad file is an error, never a panic or a hang.
pub fn pcap_replay(data: &[u8]) {
    static SETUP: std::sync::OnceLock<Setup> = std::sync::OnceLock::new();
    let data = &data[..data.len().min(MAX_INPUT)];
    let _ = crate::replay::replay_bytes(data, SETUP.get_or_init(Setup::capture_lab));
}

/// The port-forwarding grammar: what parses prints back to itself.
pub fn port_spec(data: &[u8]) {
    use sans_io::fwd::PortSpec;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<PortSpec>() {
        let printed = spec.to_string();
        assert_eq!(
            printed.parse::<PortSpec>().as_ref(),
            Ok(&spec),
            "{text:?} -> {printed:?}"
        );
        if let PortSpec::Ports(ranges) = &spec {
            let _ = ranges.expand(32768..=60999);
        }
        let rules = spec.to_rules(sans_io::flow::Proto::Tcp, 32768..=60999);
        assert!(rules.iter().all(|r| r.first <= r.last && r.first != 0));
    }
}

/// The control-socket protocol: the decoder never panics on either direction's bytes, and
/// what it accepts encodes back to bytes that decode to the same tables; the same for the
/// server's status answer.
pub fn control(data: &[u8]) {
    use sans_io::control::{
        encode_listing_table, encode_update_table, write_end, Hello, Stream, TablesBuilder,
    };
    let data = &data[..data.len().min(MAX_INPUT)];
    for stream in [Stream::Listing, Stream::Update] {
        let mut builder = TablesBuilder::new(stream);
        // Split the input as a socket might: the first byte says where.
        let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
        let fed = builder
            .feed(&data[..cut])
            .and_then(|_| builder.feed(&data[cut..]));
        if fed.is_err() || !builder.is_done() {
            continue;
        }
        let mut again = Vec::new();
        if stream == Stream::Listing {
            again.extend_from_slice(&Hello::ours().encode());
        }
        for t in builder.tables() {
            match &t.info {
                Some((name, caps)) => {
                    encode_listing_table(t.pif, name, *caps, &t.rules, &mut again)
                }
                None => encode_update_table(t.pif, &t.rules, &mut again),
            }
            .expect("decoded tables encode");
        }
        write_end(&mut again);
        let mut check = TablesBuilder::new(stream);
        assert_eq!(check.feed(&again), Ok(true), "re-encoded tables decode");
        assert_eq!(check.tables(), builder.tables());
    }
    // The server's answer to an update (our extension): decoded, it encodes back to itself.
    if let Ok(Some(status)) = sans_io::control::decode_status(data) {
        let mut again = Vec::new();
        sans_io::control::encode_status(&status, &mut again);
        assert_eq!(again, data, "a status message encodes back to its bytes");
    }
}

/// A pasta listing and an update as pesto sends it, with rules of every shape.
fn control_seeds() -> Vec<Vec<u8>> {
    use sans_io::control::{
        encode_listing_table, encode_update_table, write_end, Caps, Hello, Pif,
    };
    use sans_io::flow::Proto;
    use sans_io::fwd::rule::{ForwardRule, Listen};
    let rules = [
        ForwardRule {
            listen: Listen::Addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            target: Some(IpAddr::V4(Ipv4Addr::new(10, 88, 0, 2))),
            to: 80,
            ..ForwardRule::ports(Proto::Tcp, 8080, 8080)
        },
        ForwardRule {
            listen: Listen::Addr(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            iface: Some("lo".into()),
            weak: true,
            ..ForwardRule::ports(Proto::Udp, 53, 54)
        },
        ForwardRule {
            scan: true,
            ..ForwardRule::ports(Proto::Tcp, 1, 65535)
        },
    ];
    let mut listing = Hello::ours().encode().to_vec();
    encode_listing_table(Pif::Host, "HOST", Caps(0x3f), &rules, &mut listing).expect("seed");
    encode_listing_table(Pif::Splice, "SPLICE", Caps(0x1c), &rules[2..], &mut listing)
        .expect("seed");
    write_end(&mut listing);
    let mut update = Vec::new();
    encode_update_table(Pif::Host, &rules, &mut update).expect("seed");
    encode_update_table(Pif::Splice, &[], &mut update).expect("seed");
    write_end(&mut update);
    vec![listing, update]
}

/// resolv.conf parsing.
pub fn resolv_conf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sans_io::config::resolv::ResolvConf::parse(&text);
}

/// The socket-table parser pasta's `auto` forwarding reads `/proc/net/{tcp,udp}[6]` with:
/// whatever the text, it reports only real ports (never 0), and a line it takes still parses
/// on its own.
pub fn procnet(data: &[u8]) {
    use sans_io::fwd::procnet::{add_bound_ports, PortSet, Table};
    for table in [Table::Tcp, Table::Udp] {
        let mut ports = PortSet::new();
        add_bound_ports(data, table, &mut ports);
        assert!(!ports.contains(0), "port 0 reported");
        let mut again = PortSet::new();
        let header_and_lines = [b"header\n".as_slice(), data].concat();
        add_bound_ports(&header_and_lines, table, &mut again);
        // The first line of `data` was a header before and is a line now: at most one more.
        let extra = again.iter().filter(|p| !ports.contains(*p)).count();
        assert!(extra <= 1, "{extra} ports appeared from one line");
    }
}

/// Seeds for a target, derived from `testdata/` (`dir` is the repository's root).
pub fn seeds(target: &str, root: &std::path::Path) -> Vec<Vec<u8>> {
    let captures = root.join("testdata/captures");
    let mut files: Vec<_> = std::fs::read_dir(&captures)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "pcap"));
    files.sort();
    let mut records = Vec::new();
    let mut whole = Vec::new();
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        if let Ok(r) = crate::pcapfile::read(&bytes) {
            records.push(r);
        }
        whole.push(bytes);
    }
    let frames = || records.iter().flatten().map(|r| r.frame.clone());
    let udp_payloads = |port: u16| -> Vec<Vec<u8>> {
        frames()
            .filter_map(|f| match fields::decode(&f).l4 {
                Some(fields::L4::Udp { dst, payload, .. }) if dst.port() == port => Some(payload),
                _ => None,
            })
            .collect()
    };
    match target {
        "engine" => records
            .iter()
            .map(|r| encode_frames(r.iter().map(|r| r.frame.as_slice())))
            .collect(),
        "wire" => frames().collect(),
        "dhcp" => udp_payloads(67),
        "dhcpv6" => udp_payloads(547),
        "ndp" => frames()
            .filter_map(|f| {
                if f.get(12..14) != Some(&[0x86, 0xdd]) || f.get(20) != Some(&58) {
                    return None;
                }
                let icmp = f.get(54..)?;
                let ty = *icmp.first()?;
                (133..=137).contains(&ty).then(|| {
                    let mut s = vec![ty - 133];
                    s.extend_from_slice(&icmp[4..]);
                    s
                })
            })
            .collect(),
        "pcap_replay" => whole,
        "control" => control_seeds(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harnesses' output checks do fire: a frame of ours with a broken checksum.
    #[test]
    #[should_panic(expected = "bad checksums")]
    fn a_bad_checksum_in_our_output_is_a_crash() {
        let config = config();
        let mut f = ipv4_udp(
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
            67,
            68,
            b"x",
        );
        f[6..12].copy_from_slice(&config.our_mac.0);
        f[41] ^= 1;
        check_output(&config, &f);
    }

    #[test]
    fn a_good_frame_passes_the_checks() {
        let config = config();
        let mut f = ipv4_udp(
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
            67,
            68,
            b"x",
        );
        f[6..12].copy_from_slice(&config.our_mac.0);
        check_output(&config, &f);
    }
}
