//! No panic, no socket misuse, no leak, whatever the guest sends and the sockets report.

mod common;
mod tcp_mock;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use sans_io::engine::EngineOptions;
use sans_io::flow::{SockEvent, SockRef};
use sans_io::wire::tcp::{flags, Header};
use tcp_mock::*;

const GUESTS: [&str; 3] = ["192.0.2.2:40000", "192.0.2.2:40001", "[2001:db8::2]:40002"];
const PEERS: [&str; 3] = ["203.0.113.5:80", "192.0.2.1:22", "[2001:db8:1::5]:443"];

#[derive(Debug, Clone)]
enum Op {
    Raw(Vec<u8>),
    Seg {
        conn: usize,
        flags: u8,
        dseq: i32,
        dack: i32,
        window: u16,
        wscale: Option<u8>,
        len: usize,
    },
    Event(usize, u8, i32),
    Data(usize, usize),
    Space(usize, u32),
    Accept(u16),
    /// A whole outbound handshake on one of the connections.
    Establish(usize),
    Advance(u64),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Op::Raw),
        8 => (0..3usize, tcp_flags(), delta(), delta(), window(),
              proptest::option::of(0u8..20), prop_oneof![3 => Just(0usize), 2 => 0usize..3000])
            .prop_map(|(conn, flags, dseq, dack, window, wscale, len)| Op::Seg {
                conn, flags, dseq, dack, window, wscale, len,
            }),
        4 => (0..6usize, 0u8..5, any::<i32>()).prop_map(|(s, e, errno)| Op::Event(s, e, errno)),
        2 => (0..6usize, 0usize..100_000).prop_map(|(s, n)| Op::Data(s, n)),
        2 => (0..6usize, 0u32..100_000).prop_map(|(s, n)| Op::Space(s, n)),
        1 => prop_oneof![Just(8080u16), Just(9999), Just(22)].prop_map(Op::Accept),
        2 => (0..3usize).prop_map(Op::Establish),
        2 => (0u64..5000).prop_map(Op::Advance),
        2 => Just(Op::Flush),
    ]
}

fn tcp_flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(flags::ACK),
        4 => Just(flags::ACK | flags::PSH),
        2 => Just(flags::SYN),
        1 => Just(flags::SYN | flags::ACK),
        2 => Just(flags::FIN | flags::ACK),
        1 => Just(flags::RST),
        1 => Just(flags::RST | flags::ACK),
        1 => any::<u8>(),
    ]
}

fn delta() -> impl Strategy<Value = i32> {
    prop_oneof![6 => Just(0), 3 => -2i32..=2, 1 => -4000i32..4000, 1 => any::<i32>()]
}

fn window() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(65535u16), 1 => Just(0), 2 => any::<u16>()]
}

/// What the fuzzing guest knows of each connection: the last sequence numbers seen.
#[derive(Default, Clone, Copy)]
struct Seen {
    seq_end: u32,
    ack: u32,
}

fn note(seen: &mut HashMap<(SocketAddr, SocketAddr), Seen>, segs: &[Seg]) {
    for seg in segs {
        let e = seen.entry((seg.dst, seg.src)).or_default();
        let syn_fin = u32::from(seg.flags & (flags::SYN | flags::FIN) != 0);
        e.seq_end = seg.seq.wrapping_add(seg.payload.len() as u32 + syn_fin);
        e.ack = seg.ack;
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = config(|o| o.tcp_in.add("8080:80".parse().unwrap()).unwrap());
    let mut h = H::with(
        cfg,
        EngineOptions {
            max_tcp_flows: 4,
            ..EngineOptions::default()
        },
    );
    let mut seen: HashMap<(SocketAddr, SocketAddr), Seen> = HashMap::new();
    let mut accepted_from = 50000u16;
    for op in ops {
        match op {
            Op::Raw(bytes) => h.frame_bytes(&bytes),
            Op::Seg {
                conn,
                flags: fl,
                dseq,
                dack,
                window,
                wscale,
                len,
            } => {
                let me: SocketAddr = GUESTS[conn].parse().unwrap();
                let mut peer: SocketAddr = PEERS[conn].parse().unwrap();
                // Sometimes aim at an inbound connection's tuple instead.
                if let Some((&(_, p), _)) = seen
                    .iter()
                    .find(|((d, s), _)| *d == me && s.port() >= 50000)
                {
                    if dseq % 2 == 0 {
                        peer = p;
                    }
                }
                let k = seen.get(&(me, peer)).copied().unwrap_or_default();
                let payload = vec![0x5a; len];
                let hdr = Header {
                    seq: k.ack.wrapping_add(dseq as u32),
                    ack: k.seq_end.wrapping_add(dack as u32),
                    flags: fl,
                    window,
                    mss: (fl & flags::SYN != 0).then_some(1000 + (len as u16)),
                    wscale,
                    ..Header::default()
                };
                h.send_raw(me, peer, hdr, &payload);
            }
            Op::Event(i, e, errno) => {
                let s = SockRef(100 + i as u32);
                let ev = match e {
                    0 => SockEvent::Connected,
                    1 => SockEvent::Readable,
                    2 => SockEvent::Writable,
                    3 => SockEvent::PeerClosed,
                    _ => SockEvent::Error(errno),
                };
                if let Some(sock) = h.io.socks.get_mut(&s.0) {
                    if ev == SockEvent::PeerClosed {
                        sock.eof = true;
                    }
                }
                h.event_held(s, ev);
            }
            Op::Data(i, n) => {
                if let Some(sock) = h.io.socks.get_mut(&(100 + i as u32)) {
                    if !sock.eof {
                        sock.rx.extend(std::iter::repeat_n(0xa5, n));
                    }
                }
            }
            Op::Space(i, n) => {
                if let Some(sock) = h.io.socks.get_mut(&(100 + i as u32)) {
                    sock.space = n;
                }
            }
            Op::Accept(port) => {
                let s = h.io.accepted();
                accepted_from += 1;
                let peer = format!("198.51.100.7:{accepted_from}");
                h.accept(s, &peer, &format!("192.0.2.2:{port}"));
            }
            Op::Establish(conn) => {
                let me: SocketAddr = GUESTS[conn].parse().unwrap();
                let peer: SocketAddr = PEERS[conn].parse().unwrap();
                let syn = Header {
                    seq: 7,
                    flags: flags::SYN,
                    window: 65535,
                    mss: Some(1400),
                    wscale: Some(6),
                    ..Header::default()
                };
                h.send_raw(me, peer, syn, &[]);
                h.flush();
                if !h.io.socks.is_empty() {
                    let s = h.last_sock();
                    h.event(s, SockEvent::Connected);
                }
                let segs = h.take();
                note(&mut seen, &segs);
                let k = seen.get(&(me, peer)).copied().unwrap_or_default();
                let ack = Header {
                    seq: k.ack,
                    ack: k.seq_end,
                    flags: flags::ACK,
                    window: 2000,
                    ..Header::default()
                };
                h.send_raw(me, peer, ack, &[]);
            }
            Op::Advance(ms) => h.advance(Duration::from_millis(ms)),
            Op::Flush => h.flush(),
        }
        let segs = h.take();
        note(&mut seen, &segs);
        prop_assert!(h.io.misuse.is_empty(), "{:?}", h.io.misuse);
        prop_assert_eq!(h.engine.counters().tcp.flows, h.engine.tcp().len() as u64);
        prop_assert!(h.engine.tcp().len() <= 4);
    }
    if std::env::var("TCP_FUZZ_DEBUG").is_ok() {
        eprintln!("{:?}", h.engine.counters().tcp);
    }
    // Left alone long enough, every flow ends and every socket is closed, once.
    h.flush();
    h.advance(Duration::from_secs(3 * 3600));
    prop_assert_eq!(h.engine.tcp().len(), 0);
    prop_assert!(h.io.misuse.is_empty(), "{:?}", h.io.misuse);
    for (id, sock) in &h.io.socks {
        prop_assert!(sock.closed.is_some(), "socket {} left open", id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(400)))]

    #[test]
    fn arbitrary_frames_and_events(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_as_tcp_frames(payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        // Valid Ethernet and IPv4 headers around arbitrary TCP bytes.
        let mut h = H::new();
        let mut frame = vec![0u8; 14];
        frame[0..6].copy_from_slice(&h.engine.config().our_mac.0);
        frame[6..12].copy_from_slice(&GUEST_MAC.0);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = 20 + payload.len();
        let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0,
            192, 0, 2, 2, 203, 0, 113, 5];
        let sum = sans_io::wire::checksum::of(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&payload);
        h.frame_bytes(&frame);
        h.flush();
        h.advance(Duration::from_secs(10));
        h.check();
    }
}
