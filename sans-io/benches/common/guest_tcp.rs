//! The guest's end of one IPv4 TCP connection: its frames, built once and then only
//! renumbered in place (with the checksum updated incrementally, RFC 1624) so that the
//! benchmark times the engine, not the guest; and the handshake through the engine.

use std::net::SocketAddr;

use sans_io::engine::Engine;
use sans_io::flow::{SockEvent, SockRef};
use sans_io::time::Instant;
use sans_io::wire::build::Route;
use sans_io::wire::parse::{self, ip_proto, ETH_HEADER_LEN, IPV4_HEADER_LEN};
use sans_io::wire::tcp::{self as wtcp, flags, Header, Segment};
use sans_io::wire::{checksum, FrameQueue};

use super::fake_host::FakeHost;
use super::lab::GUEST_MAC;

/// Where the TCP header starts in a guest frame (IPv4 without options).
const TCP_AT: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN;
const SEQ_AT: usize = TCP_AT + 4;
const ACK_AT: usize = TCP_AT + 8;
const CHECKSUM_AT: usize = TCP_AT + 16;

/// The guest's window scale shift, offered in its SYN.
pub const GUEST_WSCALE: u8 = 7;

/// One connection as the guest sees it.
#[derive(Debug)]
pub struct GuestConn {
    me: SocketAddr,
    peer: SocketAddr,
    /// The next sequence number the guest sends.
    pub seq: u32,
    /// The next sequence number the guest expects (what it acknowledges).
    pub ack: u32,
    /// The host socket the engine opened for it.
    pub sock: SockRef,
}

impl GuestConn {
    /// Connects from 192.0.2.2:40000 to 203.0.113.5:80 through `engine`, whose host sockets
    /// are `host`: the guest's SYN (MSS `mss`, window scale [`GUEST_WSCALE`]), the connect
    /// completing, our SYN-ACK, the guest's ACK advertising `window` (scaled). Each step is one
    /// batch, flushed as the `Batch` drops. What the engine sends once the connection is
    /// established (the host's first data) is left in `out`.
    pub fn connect(
        engine: &mut Engine,
        host: &mut FakeHost,
        out: &mut FrameQueue,
        now: Instant,
        mss: u16,
        window: u16,
    ) -> GuestConn {
        let mut conn = GuestConn {
            me: "192.0.2.2:40000".parse().unwrap(),
            peer: "203.0.113.5:80".parse().unwrap(),
            seq: 1_000_000,
            ack: 0,
            sock: SockRef(u32::MAX),
        };
        let syn = conn.frame(
            engine,
            Header {
                seq: conn.seq,
                flags: flags::SYN,
                window: u16::MAX,
                mss: Some(mss),
                wscale: Some(GUEST_WSCALE),
                ..Header::default()
            },
            &[],
        );
        conn.seq += 1;
        engine.batch(now, &mut *host, &mut *out).frame(&syn);
        assert!(out.is_empty(), "no answer before the host connects");
        conn.sock = host.last_opened().expect("the engine connects to the peer");
        engine
            .batch(now, &mut *host, &mut *out)
            .socket(conn.sock, SockEvent::Connected);
        let syn_ack = out.get(0).map(segment_of).expect("a SYN-ACK");
        assert_eq!(syn_ack.flags, flags::SYN | flags::ACK, "a SYN-ACK");
        assert_eq!(syn_ack.ack, conn.seq, "the SYN-ACK acknowledges the SYN");
        conn.ack = syn_ack.seq.wrapping_add(1);
        out.clear();
        let ack = conn.data_frame(engine, window, &[]);
        engine.batch(now, host, out).frame(&ack);
        conn
    }

    /// A segment from the guest, ACK set, at the guest's current `seq` and `ack`, with
    /// `window` (scaled by [`GUEST_WSCALE`]) and `payload`.
    pub fn data_frame(&self, engine: &Engine, window: u16, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            seq: self.seq,
            ack: self.ack,
            flags: flags::ACK,
            window,
            ..Header::default()
        };
        self.frame(engine, h, payload)
    }

    fn frame(&self, engine: &Engine, h: Header, payload: &[u8]) -> Vec<u8> {
        let route = Route {
            src_mac: GUEST_MAC,
            dst_mac: engine.config().our_mac,
            src: self.me.ip(),
            dst: self.peer.ip(),
        };
        let h = Header {
            src_port: self.me.port(),
            dst_port: self.peer.port(),
            ..h
        };
        let mut q = FrameQueue::new();
        wtcp::frame(&mut q, &route, &h, payload);
        q.get(0).expect("one frame").to_vec()
    }
}

/// Sets the sequence number of a guest frame from [`GuestConn`].
pub fn set_seq(frame: &mut [u8], seq: u32) {
    set_u32(frame, SEQ_AT, seq);
}

/// Sets the acknowledgement number of a guest frame from [`GuestConn`].
pub fn set_ack(frame: &mut [u8], ack: u32) {
    set_u32(frame, ACK_AT, ack);
}

/// Rewrites a 32-bit header field, updating the TCP checksum for it (RFC 1624 equation 3:
/// HC' = ~(~HC + ~m + m') for each 16-bit word).
fn set_u32(frame: &mut [u8], at: usize, value: u32) {
    let old = u32::from_be_bytes(frame[at..at + 4].try_into().unwrap());
    let sum = u16::from_be_bytes([frame[CHECKSUM_AT], frame[CHECKSUM_AT + 1]]);
    let mut acc = u32::from(!sum);
    for (o, n) in [(old >> 16, value >> 16), (old & 0xffff, value & 0xffff)] {
        acc += (!o & 0xffff) + n;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    frame[at..at + 4].copy_from_slice(&value.to_be_bytes());
    frame[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&(!(acc as u16)).to_be_bytes());
}

/// The TCP segment an IPv4 frame (the engine's, or the guest's) carries, its checksum checked.
pub fn segment_of(frame: &[u8]) -> Segment<'_> {
    let eth = parse::ethernet(frame).expect("an Ethernet frame");
    let ip = parse::ipv4(eth.payload).expect("an IPv4 packet");
    assert_eq!(ip.protocol, ip_proto::TCP, "TCP");
    let sum = checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::TCP, ip.payload);
    assert_eq!(sum, 0, "a valid TCP checksum");
    wtcp::parse(ip.payload).expect("a TCP segment")
}
