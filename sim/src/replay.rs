//! Replaying a capture: the guest's frames from a `--pcap` file (ours or the original's)
//! drive a fresh engine, and its answers are compared, in order, with the frames the capture
//! says went to the guest.
//!
//! # The host side, scripted from the capture itself
//!
//! A capture holds only the tap side, so what the host's sockets did is inferred from the
//! frames that went to the guest, and only when the engine needs it: before each recorded
//! frame for the guest, if the engine hasn't produced an answer to compare it with yet,
//! [`ScriptedHost`] makes happen what that frame implies on the host:
//!
//! - a SYN-ACK on a connection the guest opened: its connect succeeded (an RST: refused);
//! - TCP data: the remote sent those bytes (they become readable, up to the segment's end,
//!   so the engine can send the same segment); a FIN: the remote closed; an RST: a reset;
//! - a SYN from us: a connection accepted on a forwarded port (the port is forwarded);
//! - a UDP datagram or an echo reply: a datagram or reply arrived on the flow's socket.
//!
//! Everything the engine sends to the host is accepted whole (a fast, roomy peer). Time
//! follows the capture's timestamps; the engine's timers fire as it comes due. Guest frames
//! recorded less than [`BATCH_GAP`] apart, with nothing sent to the guest between them, are
//! treated as one wake-up (one flush), as the data path reads them.
//!
//! # What is compared
//!
//! Every field [`crate::fields`] decodes, except those two runs legitimately disagree on
//! (IP identification, checksums, IPv6 flow label, TCP window and timestamp values); TCP
//! sequence numbers relative to the first one sent on the flow. Our frames' checksums must
//! verify. A mismatch names the capture's frame number and the first field that differs.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use sans_io::config::{Config, Mode, NetOptions};
use sans_io::engine::{Batch, Counters, Engine, EngineOptions};
use sans_io::flow::{
    Bind, CloseSockets, DgramSockets, Peeked, PingSockets, SockEvent, SockRef, StreamSockets,
};
use sans_io::fwd::PortSpec;
use sans_io::time::Instant;
use sans_io::wire::FrameQueue;

use crate::fields::{self, Decoded, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::pcapfile::Record;
use crate::Lab;

/// Guest frames closer than this, with nothing sent between them, share a wake-up.
pub const BATCH_GAP: Duration = Duration::from_millis(1);
/// How late a timer may fire, in the replay, for the frame it sent to match.
pub const TIMER_SLACK: Duration = Duration::from_millis(50);
/// Mismatches reported in full; more are counted.
pub const MISMATCHES_SHOWN: usize = 20;
const ECONNREFUSED: i32 = 111;
const ECONNRESET: i32 = 104;

/// What a capture was taken with: the host network and options the engine's configuration
/// derives from.
#[derive(Debug, Clone)]
pub struct Setup {
    pub lab: Lab,
    pub opts: NetOptions,
    pub engine: EngineOptions,
    pub seed: u64,
    /// Keep a line per frame and host event in [`Report::trace`].
    pub trace: bool,
}

impl Setup {
    /// The lab `testdata/captures/record-pasta.sh` and `bins/tests/common` build: pasta in a
    /// host namespace with 198.51.100.2/24 and 2001:db8:1::2/64 on `veth0` (MAC
    /// 02:00:00:00:01:02), default routes via 198.51.100.1 and 2001:db8:1::1, and a resolv.conf
    /// naming 203.0.113.53, 2001:db8:2::53 and `search lab.test`.
    pub fn capture_lab() -> Setup {
        Setup::parse(CAPTURE_LAB).expect("the capture lab parses")
    }

    /// A setup from its text form, one directive a line (`#` starts a comment):
    ///
    /// ```text
    /// mode pasta                       # or passt
    /// link veth0 02:00:00:00:01:02 1500
    /// addr veth0 198.51.100.2/24
    /// route veth0 198.51.100.1         # default route via a gateway [metric]
    /// nameserver 203.0.113.53          # resolv.conf lines
    /// search lab.test
    /// mtu 65520                        # -m
    /// tcp-forward 8080                 # -t (ports pasta forwarded)
    /// ```
    pub fn parse(text: &str) -> Result<Setup, String> {
        let mut lab = Lab::new();
        let mut links: HashMap<String, u32> = HashMap::new();
        let mut resolv = String::new();
        let mut opts = NetOptions::new(Mode::Pasta);
        // A capture is of the tap: local connections that took pasta's loopback bypass are not
        // in it, and the ones that are went through the tap, so the replay has no bypass.
        opts.no_splice = true;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            let link = |links: &HashMap<String, u32>, name: &str| {
                links
                    .get(name)
                    .copied()
                    .ok_or_else(|| bad(&format!("no link {name} declared before")))
            };
            match words.as_slice() {
                [] => {}
                ["mode", "pasta"] => opts.mode = Mode::Pasta,
                ["mode", "passt"] => opts.mode = Mode::Passt,
                ["link", name, mac, mtu] => {
                    let mac: sans_io::wire::MacAddr = mac.parse().map_err(|_| bad("MAC"))?;
                    let mtu = mtu.parse().map_err(|_| bad("MTU"))?;
                    links.insert(name.to_string(), lab.link(name, mac.0, mtu));
                }
                ["addr", name, cidr] => {
                    let ifindex = link(&links, name)?;
                    let (a, len) = cidr.split_once('/').ok_or_else(|| bad("address/prefix"))?;
                    a.parse::<IpAddr>().map_err(|_| bad("address"))?;
                    len.parse::<u8>().map_err(|_| bad("prefix length"))?;
                    lab.addr(ifindex, cidr);
                }
                ["route", name, gw, rest @ ..] => {
                    let ifindex = link(&links, name)?;
                    gw.parse::<IpAddr>().map_err(|_| bad("gateway"))?;
                    let metric = match rest {
                        [] => 0,
                        [m] => m.parse().map_err(|_| bad("metric"))?,
                        _ => return Err(bad("route NAME GATEWAY [METRIC]")),
                    };
                    lab.default_route(ifindex, gw, metric);
                }
                ["nameserver" | "search", ..] => {
                    resolv.push_str(line);
                    resolv.push('\n');
                }
                ["mtu", mtu] => opts.mtu = Some(mtu.parse().map_err(|_| bad("MTU"))?),
                ["tcp-forward", spec] => {
                    let spec: PortSpec = spec.parse().map_err(|e| bad(&format!("{e}")))?;
                    opts.tcp_in.add(spec).map_err(|e| bad(&format!("{e}")))?;
                }
                _ => return Err(bad("unknown directive")),
            }
        }
        lab.resolv_conf(&resolv);
        Ok(Setup {
            lab,
            opts,
            engine: EngineOptions::default(),
            seed: 0,
            trace: false,
        })
    }

    /// The engine's configuration for replaying `records`: ports the capture shows us
    /// connecting into the guest are forwarded.
    pub fn config(&self, records: &[Record]) -> Result<Config, String> {
        let mut opts = self.opts.clone();
        let derived = self.lab.derive(&opts).map_err(|e| e.to_string())?;
        let our_mac = derived.config.our_mac.0;
        let mut ports: Vec<u16> = Vec::new();
        for r in records
            .iter()
            .filter(|r| r.frame.get(6..12) == Some(&our_mac))
        {
            if let Some(L4::Tcp { dst, flags, .. }) = fields::decode(&r.frame).l4 {
                if flags & (TCP_SYN | TCP_ACK) == TCP_SYN && !ports.contains(&dst.port()) {
                    ports.push(dst.port());
                }
            }
        }
        if ports.is_empty() {
            return Ok(derived.config);
        }
        let spec = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let spec: PortSpec = spec.parse().map_err(|e| format!("{e}"))?;
        opts.tcp_in
            .add(spec)
            .map_err(|e| format!("forwarding the capture's inbound ports: {e}"))?;
        self.lab
            .derive(&opts)
            .map(|d| d.config)
            .map_err(|e| e.to_string())
    }
}

/// The lab of `record-pasta.sh`, in [`Setup::parse`]'s form.
pub const CAPTURE_LAB: &str = "\
mode pasta
link veth0 02:00:00:00:01:02 1500
addr veth0 198.51.100.2/24
addr veth0 2001:db8:1::2/64
addr veth0 fe80::ff:fe00:102/64
route veth0 198.51.100.1
route veth0 2001:db8:1::1 1024
nameserver 203.0.113.53
nameserver 2001:db8:2::53
search lab.test
";

/// A flow as the guest sees it: protocol, the guest's end, the far end. Echo flows use the
/// echo identifier as the guest's port and 0 as the far end's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub guest: SocketAddr,
    pub remote: SocketAddr,
}

impl FlowKey {
    /// The flow of a frame from the guest.
    fn from_guest(l4: &L4) -> Option<FlowKey> {
        match *l4 {
            L4::Tcp { src, dst, .. } => Some(FlowKey {
                proto: 6,
                guest: src,
                remote: dst,
            }),
            L4::Udp { src, dst, .. } => Some(FlowKey {
                proto: 17,
                guest: src,
                remote: dst,
            }),
            L4::Echo { src, dst, id, .. } => Some(FlowKey {
                proto: 1,
                guest: SocketAddr::new(src, id),
                remote: SocketAddr::new(dst, 0),
            }),
            L4::Other => None,
        }
    }

    /// The flow of a frame to the guest.
    fn to_guest(l4: &L4) -> Option<FlowKey> {
        match *l4 {
            L4::Tcp { src, dst, .. } => Some(FlowKey {
                proto: 6,
                guest: dst,
                remote: src,
            }),
            L4::Udp { src, dst, .. } => Some(FlowKey {
                proto: 17,
                guest: dst,
                remote: src,
            }),
            L4::Echo { src, dst, id, .. } => Some(FlowKey {
                proto: 1,
                guest: SocketAddr::new(dst, id),
                remote: SocketAddr::new(src, 0),
            }),
            L4::Other => None,
        }
    }
}

#[derive(Debug, Default)]
struct Sock {
    key: Option<FlowKey>,

    closed: bool,
    /// TCP: a connect waiting for its outcome.
    connecting: bool,
    /// TCP: bytes the remote sent so far (from the start of the stream), and how many of
    /// them the engine discarded.
    stream: Vec<u8>,
    discarded: usize,
    fin: bool,
    /// UDP and echo: datagrams waiting.
    queue: VecDeque<Vec<u8>>,
    /// Bytes or datagrams the engine sent to the host.
    sent: usize,
}

/// Host sockets whose peers do what the capture says they did (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct ScriptedHost {
    socks: Vec<Sock>,
    by_key: HashMap<FlowKey, SockRef>,
    events: VecDeque<(SockRef, SockEvent)>,
    /// The flow of the guest frame being handled, for sockets it opens.
    current: Option<FlowKey>,
    /// Misuse by the engine (a discard beyond the data, a call on a closed socket).
    pub violations: Vec<String>,
}

impl ScriptedHost {
    fn open(&mut self) -> SockRef {
        let s = SockRef(self.socks.len() as u32);
        let key = self.current;
        if let Some(k) = key {
            self.by_key.insert(k, s);
        }
        self.socks.push(Sock {
            key,

            ..Sock::default()
        });
        s
    }

    fn sock(&mut self, s: SockRef, call: &str) -> io::Result<&mut Sock> {
        match self.socks.get_mut(s.0 as usize) {
            Some(sock) if !sock.closed => Ok(sock),
            _ => {
                self.violations
                    .push(format!("{call} on closed socket {}", s.0));
                Err(io::ErrorKind::NotConnected.into())
            }
        }
    }

    fn push_event(&mut self, s: SockRef, ev: SockEvent) {
        self.events.push_back((s, ev));
    }
}

impl CloseSockets for ScriptedHost {
    fn close(&mut self, s: SockRef, _reset: bool) {
        if let Ok(sock) = self.sock(s, "close") {
            sock.closed = true;
            if let Some(k) = sock.key {
                if self.by_key.get(&k) == Some(&s) {
                    self.by_key.remove(&k);
                }
            }
        }
    }
}

impl StreamSockets for ScriptedHost {
    fn tcp_connect(&mut self, _: SocketAddr, _: Bind<'_>, _: Option<u16>) -> io::Result<SockRef> {
        let s = self.open();
        self.socks[s.0 as usize].connecting = true;
        Ok(s)
    }

    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let sock = self.sock(s, "send")?;
        sock.sent += data.len();
        Ok(data.len())
    }

    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        let sock = self.sock(s, "peek")?;
        let from = sock.discarded.saturating_add(offset);
        let avail = sock.stream.get(from..).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        // The end is told by the `PeerClosed` the capture's FIN queues, where it was seen, and
        // by a peek that reaches it once that FIN was seen (as the kernel's does).
        if sock.fin && n == avail.len() {
            return Ok(Peeked::last(n));
        }
        Ok(Peeked::bytes(n))
    }

    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        let sock = self.sock(s, "discard")?;
        if sock.discarded + len > sock.stream.len() {
            let why = format!(
                "discard of {len} bytes on socket {} with {} readable",
                s.0,
                sock.stream.len() - sock.discarded
            );
            self.violations.push(why);
            return Err(io::ErrorKind::InvalidInput.into());
        }
        sock.discarded += len;
        Ok(())
    }

    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        self.sock(s, "send_space")?;
        Ok(4 << 20)
    }

    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        self.sock(s, "shutdown")?;
        Ok(())
    }

    fn set_interest(&mut self, _: SockRef, _: bool, _: bool) {}
}

impl DgramSockets for ScriptedHost {
    fn udp_open(&mut self, _: Bind<'_>, _: SocketAddr) -> io::Result<SockRef> {
        Ok(self.open())
    }

    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        self.send(s, data)
    }

    fn udp_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        let sock = self.sock(s, "udp_recv")?;
        let d = sock.queue.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }

    fn udp_recv_from(&mut self, s: SockRef, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        // The replay opens no forwarding listeners (inbound UDP isn't scripted).
        self.sock(s, "udp_recv_from")?;
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn udp_reply_open(
        &mut self,
        _: SocketAddr,
        _: Option<&str>,
        _: SocketAddr,
    ) -> io::Result<SockRef> {
        Ok(self.open())
    }

    fn udp_send_via(&mut self, listener: SockRef, _: SocketAddr, data: &[u8]) -> io::Result<usize> {
        self.send(listener, data)
    }
}

impl PingSockets for ScriptedHost {
    fn ping_open(&mut self, _: Bind<'_>, _: IpAddr, id: u16) -> io::Result<(SockRef, u16)> {
        Ok((self.open(), id))
    }

    fn ping_send(&mut self, s: SockRef, msg: &[u8]) -> io::Result<usize> {
        self.send(s, msg)
    }

    fn ping_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        self.udp_recv(s, buf)
    }
}

/// A recorded frame for the guest that our engine answered differently (or not at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The capture's frame number (from 1, as tcpdump -# and Wireshark count).
    pub number: usize,
    pub at: Duration,
    pub recorded: String,
    /// Our frame, `None` if we had nothing to send.
    pub ours: Option<String>,
    pub field: String,
    pub recorded_value: String,
    pub our_value: String,
    /// Further fields that differ in the same frame: (field, recorded, ours).
    pub more: Vec<(String, String, String)>,
}

/// What a replay found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub records: usize,
    pub from_guest: usize,
    pub to_guest: usize,
    /// Frames for the guest we produced exactly as recorded.
    pub matched: usize,
    pub mismatches: Vec<Mismatch>,
    /// Frames we sent that the capture doesn't have, and where.
    pub extra: Vec<String>,
    /// What the replay couldn't script or noticed on the way.
    pub notes: Vec<String>,
    pub counters: Counters,
    /// With [`Setup::trace`]: what happened, frame by frame.
    pub trace: Vec<String>,
}

impl Report {
    /// Every recorded answer reproduced, nothing more sent.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.extra.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} frames: {} from the guest, {} to it; {} reproduced exactly",
            self.records, self.from_guest, self.to_guest, self.matched
        )?;
        for m in self.mismatches.iter().take(MISMATCHES_SHOWN) {
            writeln!(
                f,
                "frame {} at {:.6} s: {}",
                m.number,
                m.at.as_secs_f64(),
                m.recorded
            )?;
            match &m.ours {
                Some(ours) => writeln!(f, "  ours:     {ours}")?,
                None => writeln!(f, "  ours:     nothing")?,
            }
            writeln!(f, "  field {}:", m.field)?;
            writeln!(f, "    recorded {}", m.recorded_value)?;
            writeln!(f, "    ours     {}", m.our_value)?;
            for (field, rec, ours) in &m.more {
                writeln!(f, "  also {field}: recorded {rec}, ours {ours}")?;
            }
        }
        if self.mismatches.len() > MISMATCHES_SHOWN {
            writeln!(
                f,
                "... and {} more mismatches",
                self.mismatches.len() - MISMATCHES_SHOWN
            )?;
        }
        for e in self.extra.iter().take(MISMATCHES_SHOWN) {
            writeln!(f, "extra frame from us, not in the capture, {e}")?;
        }
        if self.extra.len() > MISMATCHES_SHOWN {
            writeln!(
                f,
                "... and {} more extra frames",
                self.extra.len() - MISMATCHES_SHOWN
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let c = &self.counters;
        writeln!(
            f,
            "engine: {} frames, {} malformed{}, {} ignored",
            c.frames,
            c.malformed,
            c.last_malformed
                .map(|w| format!(" (last: {w})"))
                .unwrap_or_default(),
            c.ignored
        )?;
        if self.passed() {
            write!(f, "verdict: SAME (every answer as recorded)")
        } else {
            write!(
                f,
                "verdict: DIFFERENT ({} mismatches, {} extra frames; first at frame {})",
                self.mismatches.len(),
                self.extra.len(),
                self.mismatches
                    .first()
                    .map(|m| m.number.to_string())
                    .unwrap_or_else(|| "-".into())
            )
        }
    }
}

struct Replayer<'e> {
    /// The engine, the scripted host and the queue, in the batch of the current wake-up
    /// (which [`Replayer::flush`] ends and begins anew).
    batch: Batch<'e, ScriptedHost>,
    /// Our frames not compared yet, with their [`kind_of`].
    produced: VecDeque<(Vec<u8>, String)>,
    now: Instant,
    pending_input: bool,
    config: Config,
    /// First sequence number each side sent on a flow (engine to guest), for relative
    /// comparison: the capture's and ours.
    rec_base: HashMap<(SocketAddr, SocketAddr), u32>,
    our_base: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Initial sequence numbers (of our SYN or SYN-ACK) per flow: the capture's and ours.
    rec_isn: HashMap<FlowKey, u32>,
    our_isn: HashMap<FlowKey, u32>,
    report: Report,
    trace: bool,
    /// Guest frames of the current wake-up not handed to the engine yet: where the host's
    /// events fall among them is known only from the frames we send next.
    buffer: Vec<(Record, Instant)>,
}

/// Bound on engine calls per replay step: a livelock is reported, not spun on.
const STEP_LIMIT: usize = 10_000;

impl Replayer<'_> {
    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.trace {
            let at = self.now.as_nanos() as f64 / 1e9;
            self.report.trace.push(format!("{at:.6} {}", line()));
        }
    }

    fn drain(&mut self) {
        for f in self.batch.queue().iter() {
            let d = fields::decode(f);
            self.produced.push_back((f.to_vec(), kind_of(&d)));
            if let Some(l4 @ L4::Tcp { flags, seq, .. }) = d.l4 {
                if flags & TCP_SYN != 0 {
                    if let Some(k) = FlowKey::to_guest(&l4) {
                        self.our_isn.insert(k, seq);
                    }
                }
            }
            if self.trace {
                let at = self.now.as_nanos() as f64 / 1e9;
                let line = format!("{at:.6}   ours: {}", fields::decode(f).summary);
                self.report.trace.push(line);
            }
        }
        self.batch.queue().clear();
    }

    /// Socket events into the engine until none are left.
    fn dispatch(&mut self) {
        self.drain();
        for _ in 0..STEP_LIMIT {
            let Some((s, ev)) = self.batch.io().events.pop_front() else {
                return;
            };
            if self.batch.io().socks[s.0 as usize].closed {
                continue;
            }
            self.note(|| format!("  host: socket {} {ev:?}", s.0));
            self.batch.advance_to(self.now).socket(s, ev);
            self.drain();
        }
        self.report
            .notes
            .push(format!("socket events kept coming at {:?}", self.now));
    }

    fn flush(&mut self) {
        self.batch.advance_to(self.now).next_batch();
        self.pending_input = false;
        self.dispatch();
    }

    /// Ends the pending wake-up and runs the engine's timers due by `at`.
    fn settle(&mut self, at: Instant) {
        if self.pending_input {
            self.flush();
        }
        for _ in 0..STEP_LIMIT {
            match self.batch.engine().poll_timeout() {
                Some(t) if t <= at => {
                    self.now = self.now.max(t);
                    self.batch.advance_to(self.now).timeout();
                    self.dispatch();
                }
                _ => break,
            }
        }
        self.now = self.now.max(at);
    }

    /// Hands the engine the guest frames read so far in this wake-up, those before `upto`.
    fn run_buffer(&mut self, upto: usize) {
        let upto = upto.min(self.buffer.len());
        let frames: Vec<(Record, Instant)> = self.buffer.drain(..upto).collect();
        for (rec, at) in frames {
            self.now = self.now.max(at);
            self.guest_frame(&rec);
        }
    }

    /// How many of the buffered guest frames the engine had handled when it sent `d`: all,
    /// unless `d` is TCP data or FIN acknowledging less than a buffered segment of its flow
    /// (the host's data was read before those frames, in the same wake-up).
    fn handled_before(&self, d: &Decoded) -> usize {
        let Some(
            l4 @ L4::Tcp {
                ack,
                flags,
                payload,
                ..
            },
        ) = &d.l4
        else {
            return self.buffer.len();
        };
        if payload.is_empty() && flags & TCP_FIN == 0 {
            return self.buffer.len();
        }
        let key = FlowKey::to_guest(l4);
        self.buffer
            .iter()
            .position(|(rec, _)| {
                let g = fields::decode(&rec.frame);
                let Some(
                    gl4 @ L4::Tcp {
                        seq,
                        flags,
                        payload,
                        ..
                    },
                ) = &g.l4
                else {
                    return false;
                };
                let len = payload.len() as u32 + u32::from(flags & (TCP_SYN | TCP_FIN) != 0);
                FlowKey::from_guest(gl4) == key
                    && len > 0
                    && (seq.wrapping_add(len).wrapping_sub(*ack) as i32) > 0
            })
            .unwrap_or(self.buffer.len())
    }

    fn guest_frame(&mut self, rec: &Record) {
        let d = fields::decode(&rec.frame);
        self.note(|| format!("frame {} from the guest: {}", rec.number, d.summary));
        let key = d.l4.as_ref().and_then(FlowKey::from_guest);
        self.batch.io().current = key;
        // The guest acknowledges the capture's sequence numbers: move them to ours.
        let mut frame = std::borrow::Cow::Borrowed(&rec.frame[..]);
        if let Some(k) = key.filter(|k| k.proto == 6) {
            if let (Some(r), Some(o)) = (self.rec_isn.get(&k), self.our_isn.get(&k)) {
                fields::shift_tcp_ack(frame.to_mut(), o.wrapping_sub(*r));
            }
        }
        self.batch.advance_to(self.now).frame(&frame);
        self.batch.io().current = None;
        self.pending_input = true;
        self.dispatch();
    }

    /// Makes happen on the host what a recorded frame for the guest implies.
    fn inject(&mut self, rec: &Record, d: &Decoded, ahead: &[Record]) {
        let Some(l4) = &d.l4 else { return };
        let Some(key) = FlowKey::to_guest(l4) else {
            return;
        };
        let sock = self.batch.io().by_key.get(&key).copied();
        match l4 {
            L4::Tcp {
                src,
                dst,
                seq,
                flags,
                payload,
                ..
            } => {
                if flags & TCP_SYN != 0 {
                    self.rec_isn.insert(key, *seq);
                }
                if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    self.accept(key, *src, *dst);
                    return;
                }
                let Some(s) = sock else {
                    return;
                };
                let i = s.0 as usize;
                if self.batch.io().socks[i].connecting {
                    self.batch.io().socks[i].connecting = false;
                    let ev = if flags & TCP_RST != 0 {
                        SockEvent::Error(ECONNREFUSED)
                    } else {
                        SockEvent::Connected
                    };
                    self.batch.io().push_event(s, ev);
                    if flags & TCP_SYN != 0 || flags & TCP_RST != 0 {
                        self.dispatch();
                        return;
                    }
                }
                if flags & TCP_RST != 0 {
                    self.batch.io().push_event(s, SockEvent::Error(ECONNRESET));
                    self.dispatch();
                    return;
                }
                let Some(isn) = self.rec_isn.get(&key).copied() else {
                    if !payload.is_empty() || flags & TCP_FIN != 0 {
                        self.report.notes.push(format!(
                            "frame {}: a connection that started before the capture can't \
                             be replayed",
                            rec.number
                        ));
                    }
                    return;
                };
                // A bare ACK says nothing about the host (its sequence number may count our
                // FIN, which is no byte of the stream).
                if payload.is_empty() && flags & TCP_FIN == 0 {
                    return;
                }
                // A segment whose data the socket already holds is a retransmission: the
                // engine's timers or the guest's ACKs send it, not the host.
                let own_end = seq.wrapping_sub(isn).wrapping_sub(1) as usize + payload.len();
                let new_fin = flags & TCP_FIN != 0 && !self.batch.io().socks[i].fin;
                if own_end <= self.batch.io().socks[i].stream.len() && !new_fin {
                    return;
                }
                // This segment, and those that follow it at once on the flow while each is
                // as long as the next (no shorter segment, which would say the data wasn't
                // there yet): the host's data as it was readable in that wake-up.
                let mut pieces = vec![(*seq, payload.as_slice())];
                let mut fin = flags & TCP_FIN != 0;
                let mut next_seq = seq.wrapping_add(payload.len() as u32);
                let mut last_len = payload.len();
                let ahead_decoded: Vec<Decoded> = ahead
                    .iter()
                    .take_while(|r| r.frame.get(6..12) == rec.frame.get(6..12))
                    .map(|r| fields::decode(&r.frame))
                    .collect();
                for a in &ahead_decoded {
                    if fin {
                        break;
                    }
                    let Some(
                        al4 @ L4::Tcp {
                            seq,
                            flags,
                            payload,
                            ..
                        },
                    ) = &a.l4
                    else {
                        continue;
                    };
                    if FlowKey::to_guest(al4) != Some(key) {
                        continue;
                    }
                    if *seq != next_seq || payload.len() > last_len || flags & TCP_RST != 0 {
                        break;
                    }
                    pieces.push((*seq, payload.as_slice()));
                    next_seq = seq.wrapping_add(payload.len() as u32);
                    last_len = payload.len();
                    fin = flags & TCP_FIN != 0;
                }
                let mut grew = false;
                for (seq, payload) in pieces {
                    let start = seq.wrapping_sub(isn).wrapping_sub(1) as usize;
                    let end = start + payload.len();
                    let sock = &mut self.batch.io().socks[i];
                    if end > (64 << 20) {
                        self.report.notes.push(format!(
                            "frame {}: data beyond 64 MiB into the stream not replayed",
                            rec.number
                        ));
                        return;
                    }
                    if end > sock.stream.len() {
                        sock.stream.resize(end, 0);
                        grew = true;
                    }
                    if start >= sock.discarded {
                        sock.stream[start..end].copy_from_slice(payload);
                    }
                }
                if grew {
                    self.batch.io().push_event(s, SockEvent::Readable);
                }
                if fin && !self.batch.io().socks[i].fin {
                    self.batch.io().socks[i].fin = true;
                    self.batch.io().push_event(s, SockEvent::PeerClosed);
                }
                self.dispatch();
            }
            L4::Udp { payload, .. } => match sock {
                Some(s) => {
                    self.batch.io().socks[s.0 as usize]
                        .queue
                        .push_back(payload.clone());
                    self.batch.io().push_event(s, SockEvent::Readable);
                    self.dispatch();
                }
                None => self.report.notes.push(format!(
                    "frame {}: a datagram on a flow the guest didn't open (inbound UDP \
                     isn't scripted)",
                    rec.number
                )),
            },
            L4::Echo { reply, msg, .. } => {
                if let (true, Some(s)) = (*reply, sock) {
                    self.batch.io().socks[s.0 as usize]
                        .queue
                        .push_back(msg.clone());
                    self.batch.io().push_event(s, SockEvent::Readable);
                    self.dispatch();
                }
            }
            L4::Other => {}
        }
    }

    /// A connection from the host to a forwarded port: `src` is the peer as the guest sees
    /// it, `dst` the guest's end.
    fn accept(&mut self, key: FlowKey, src: SocketAddr, dst: SocketAddr) {
        let (peer_ip, local_ip) = match src.ip() {
            IpAddr::V4(a) => {
                let c = self.config.ip4.as_ref();
                let mapped = c.is_some_and(|c| Some(a) == c.map_host_loopback || a == c.our_addr);
                let host = c.map(|c| c.addr).unwrap_or(Ipv4Addr::LOCALHOST);
                if mapped {
                    (
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                    )
                } else {
                    (IpAddr::V4(a), IpAddr::V4(host))
                }
            }
            IpAddr::V6(a) => {
                let c = self.config.ip6.as_ref();
                let mapped = c.is_some_and(|c| Some(a) == c.map_host_loopback || a == c.our_addr);
                let host = c.map(|c| c.addr).unwrap_or(Ipv6Addr::LOCALHOST);
                if mapped {
                    (
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    )
                } else {
                    (IpAddr::V6(a), IpAddr::V6(host))
                }
            }
        };
        self.batch.io().current = Some(key);
        let s = self.batch.io().open();
        self.batch.io().current = None;
        let (peer, local) = (
            SocketAddr::new(peer_ip, src.port()),
            SocketAddr::new(local_ip, dst.port()),
        );
        self.batch.advance_to(self.now).accept(s, peer, local);
        self.dispatch();
    }

    fn compare(&mut self, rec: &Record, d: &Decoded, ours: &[u8]) {
        let o = fields::decode(ours);
        let mut diffs: Vec<(String, String, String)> = Vec::new();
        for e in fields::checksum_errors(ours) {
            diffs.push((e.to_owned(), "valid".into(), "invalid".into()));
        }
        let rec_rel = relative_seq(&mut self.rec_base, d);
        let our_rel = relative_seq(&mut self.our_base, &o);
        let n = d.fields.len().max(o.fields.len());
        for i in 0..n {
            let (rn, rv) = d
                .fields
                .get(i)
                .map(|(n, v)| (n.as_str(), v.clone()))
                .unwrap_or(("(end)", String::new()));
            let (on, ov) = o
                .fields
                .get(i)
                .map(|(n, v)| (n.as_str(), v.clone()))
                .unwrap_or(("(end)", String::new()));
            if rn != on {
                // The frames' shapes part here: nothing after compares meaningfully.
                diffs.push((
                    format!("{rn} / {on}"),
                    format!("{rn} {rv}"),
                    format!("{on} {ov}"),
                ));
                break;
            } else if rn == "tcp.seq" {
                if rec_rel != our_rel {
                    diffs.push((
                        "tcp.seq (relative to the flow's first)".into(),
                        format!("{}", rec_rel.unwrap_or(0)),
                        format!("{}", our_rel.unwrap_or(0)),
                    ));
                }
            } else if rv != ov {
                diffs.push((rn.to_owned(), rv, ov));
            }
        }
        if diffs.is_empty() {
            self.report.matched += 1;
            return;
        }
        let (field, recorded_value, our_value) = diffs.remove(0);
        self.report.mismatches.push(Mismatch {
            number: rec.number,
            at: rec.at,
            recorded: d.summary.clone(),
            ours: Some(o.summary),
            field,
            recorded_value,
            our_value,
            more: diffs,
        });
    }
}

/// What a frame is, for lining ours up with the recorded ones: its flow (TCP, UDP, echo), or
/// its protocol and message type.
fn kind_of(d: &Decoded) -> String {
    match &d.l4 {
        Some(L4::Tcp { src, dst, .. }) => format!("tcp {src} {dst}"),
        Some(L4::Udp { src, dst, .. }) => format!("udp {src} {dst}"),
        Some(L4::Echo {
            src,
            dst,
            reply,
            id,
            ..
        }) => format!("echo {src} {dst} {reply} {id}"),
        _ => d
            .fields
            .iter()
            .filter(|(n, _)| {
                matches!(
                    n.as_str(),
                    "eth.type"
                        | "arp.op"
                        | "ip.protocol"
                        | "ip6.next_header"
                        | "icmp.type"
                        | "icmp6.type"
                )
            })
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A TCP segment's sequence number relative to the first its sender sent on the flow.
fn relative_seq(base: &mut HashMap<(SocketAddr, SocketAddr), u32>, d: &Decoded) -> Option<u32> {
    match &d.l4 {
        Some(L4::Tcp { src, dst, seq, .. }) => {
            let b = *base.entry((*src, *dst)).or_insert(*seq);
            Some(seq.wrapping_sub(b))
        }
        _ => None,
    }
}

/// Replays `records` with the engine configured by `setup`.
pub fn replay(records: &[Record], setup: &Setup) -> Result<Report, String> {
    let config = setup.config(records)?;
    let our_mac = config.our_mac.0;
    let start = Instant::from_millis(1);
    let mut engine = Engine::with_options(config.clone(), setup.seed, start, setup.engine.clone());
    let mut host = ScriptedHost::default();
    let mut out = FrameQueue::new();
    let mut r = Replayer {
        batch: engine.batch(start, &mut host, &mut out),
        produced: VecDeque::new(),
        now: start,
        pending_input: false,
        config,
        rec_base: HashMap::new(),
        our_base: HashMap::new(),
        rec_isn: HashMap::new(),
        our_isn: HashMap::new(),
        report: Report {
            records: records.len(),
            ..Report::default()
        },
        trace: setup.trace,
        buffer: Vec::new(),
    };
    let mut last_guest: Option<Instant> = None;
    for (i, rec) in records.iter().enumerate() {
        let at = start + rec.at;
        if rec.frame.get(6..12) != Some(&our_mac) {
            r.report.from_guest += 1;
            let same_wakeup = last_guest.is_some_and(|t| at.saturating_since(t) < BATCH_GAP);
            if !same_wakeup {
                r.run_buffer(usize::MAX);
                r.settle(at);
            }
            r.buffer.push((rec.clone(), at));
            last_guest = Some(at);
            continue;
        }
        last_guest = None;
        r.report.to_guest += 1;
        let d = fields::decode(&rec.frame);
        if let Some(L4::Tcp { flags, seq, .. }) = &d.l4 {
            // The capture's initial sequence numbers, for the guest's ACKs of them.
            if flags & TCP_SYN != 0 {
                if let Some(k) = d.l4.as_ref().and_then(FlowKey::to_guest) {
                    r.rec_isn.insert(k, *seq);
                }
            }
        }
        // The host's events come in the same wake-up as the guest frames around them, ahead
        // of the flush: the engine's answer to both may be one frame (an ACK carried by
        // data). Which guest frames came first is told by what the data acknowledges.
        let before = r.handled_before(&d);
        r.run_buffer(before);
        r.now = r.now.max(at);
        r.note(|| format!("frame {} to the guest: {}", rec.number, d.summary));
        // Ours of the recorded frame's kind (same flow, or same service message): frames of
        // ours ahead of it are answers the capture doesn't have.
        let kind = kind_of(&d);
        let has_kind = |r: &Replayer| r.produced.iter().any(|(_, k)| *k == kind);
        if !has_kind(&r) {
            r.inject(rec, &d, &records[i + 1..]);
        }
        r.run_buffer(usize::MAX);
        if !has_kind(&r) {
            r.settle(at);
        }
        if !has_kind(&r) {
            r.settle(at + TIMER_SLACK);
        }
        if let Some(pos) = r.produced.iter().position(|(_, k)| *k == kind) {
            for (f, _) in r.produced.drain(..pos).collect::<Vec<_>>() {
                let line = format!(
                    "before frame {}: {}",
                    rec.number,
                    fields::decode(&f).summary
                );
                r.report.extra.push(line);
            }
        }
        match r.produced.pop_front() {
            Some((ours, _)) => r.compare(rec, &d, &ours),
            None => r.report.mismatches.push(Mismatch {
                number: rec.number,
                at: rec.at,
                recorded: d.summary.clone(),
                ours: None,
                field: "(whole frame)".into(),
                recorded_value: d.summary.clone(),
                our_value: "no frame".into(),
                more: Vec::new(),
            }),
        }
    }
    if r.report.to_guest == 0 && r.report.from_guest > 0 {
        r.report.notes.push(format!(
            "no frame in the capture comes from our MAC {}: was it taken with another host \
             setup (see --lab), or does it hold the guest's frames only?",
            sans_io::wire::MacAddr(our_mac)
        ));
    }
    let end = records.last().map(|l| start + l.at).unwrap_or(start);
    r.run_buffer(usize::MAX);
    r.settle(end);
    for (f, _) in r.produced.drain(..) {
        let line = format!("after the last frame: {}", fields::decode(&f).summary);
        r.report.extra.push(line);
    }
    r.report.notes.extend(
        r.batch
            .io()
            .violations
            .iter()
            .map(|v| format!("engine misused a socket: {v}")),
    );
    r.report.counters = r.batch.engine().counters().clone();
    Ok(r.report)
}

/// Replays a capture file's bytes.
pub fn replay_bytes(bytes: &[u8], setup: &Setup) -> Result<Report, String> {
    let records = crate::pcapfile::read(bytes).map_err(|e| e.to_string())?;
    replay(&records, setup)
}
