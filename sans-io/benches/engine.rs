//! Frames per second through the engine, by its public API only (`Engine::batch`), against a
//! fake host whose sockets cost next to nothing (`common::fake_host`):
//!
//! - `tcp_guest_to_host/N`: batches of 32 in-order data segments of N payload bytes on an
//!   established flow, each batch answered by one coalesced ACK;
//! - `tcp_host_to_guest/N`: the guest acknowledges everything, and the engine peeks the next
//!   32 segments of N bytes (the guest's window) into frames for it;
//! - `answers/dhcp_discover_offer` and `answers/ndp_rs_ra`: one captured DISCOVER (RS) per
//!   batch, one OFFER (RA) back.
//!
//! Run: `cargo bench -p sans-io --bench engine` (quicker, noisier:
//! `cargo bench -p sans-io --bench engine -- --warm-up-time 1 --measurement-time 2`).
//!
//! Figures on the 2-core development machine with other builds running (noisy), with the
//! quick options above, middle estimates:
//!
//! | bench | per batch | frames/s | bytes/s |
//! |---|---|---|---|
//! | `tcp_guest_to_host/65480` | 2.24 µs | 14.3 M | 873 GiB/s |
//! | `tcp_guest_to_host/1460` | 2.27 µs | 14.1 M | 19.2 GiB/s |
//! | `tcp_host_to_guest/65480` | 74.5 µs | 430 K | 26.2 GiB/s |
//! | `tcp_host_to_guest/1460` | 3.35 µs | 9.6 M | 13.0 GiB/s |
//! | `answers/dhcp_discover_offer` | 379 ns | 2.6 M | |
//! | `answers/ndp_rs_ra` | 99 ns | 10.1 M | |
//!
//! Guest to host, the engine touches no payload byte (guests' checksums aren't verified, and
//! the fake host's send doesn't copy): its bytes/s is the per-frame cost spread over the
//! payload, not a transfer rate. Host to guest, each byte is copied once (the peek, as
//! `recv(MSG_PEEK)` would) and checksummed once, which bounds large frames.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sans_io::engine::Engine;
use sans_io::flow::{NoSockets, SockEvent};
use sans_io::time::Instant;
use sans_io::wire::parse::ETH_HEADER_LEN;
use sans_io::wire::tcp::flags;
use sans_io::wire::FrameQueue;

use common::fake_host::FakeHost;
use common::guest_tcp::{segment_of, set_ack, set_seq, GuestConn, GUEST_WSCALE};
use common::lab;

/// The engine's clock, which stands still: nothing here waits for a timer.
const NOW: Instant = Instant::from_millis(1000);

/// Segments per batch, each way: what one wake-up typically finds under bulk load.
const SEGMENTS: u32 = 32;

/// Payload sizes: the largest segment on pasta's default 65520-byte MTU, and Ethernet's.
const PAYLOADS: [u32; 2] = [65480, 1460];

fn throughput(payload: u32) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: u64::from(SEGMENTS),
        bytes: u64::from(SEGMENTS * payload),
    }
}

/// The guest's window that takes exactly [`SEGMENTS`] segments of `payload` bytes, as the
/// scaled field it advertises.
fn window_field(payload: u32) -> u16 {
    let window = SEGMENTS * payload;
    assert_eq!(
        window % (1 << GUEST_WSCALE),
        0,
        "a window the field can say"
    );
    u16::try_from(window >> GUEST_WSCALE).expect("a window the field can say")
}

fn tcp_guest_to_host(c: &mut Criterion) {
    let mut group = c.benchmark_group("tcp_guest_to_host");
    for payload in PAYLOADS {
        let mut engine = Engine::new(lab::config(), 1, NOW);
        let (mut host, mut out) = (FakeHost::new(), FrameQueue::new());
        let mss = payload as u16;
        let mut conn = GuestConn::connect(&mut engine, &mut host, &mut out, NOW, mss, 1 << 14);
        assert!(out.is_empty(), "no data from the host");
        let data: Vec<u8> = (0..payload).map(|i| (i * 7 % 253) as u8).collect();
        let mut frames: Vec<Vec<u8>> = (0..SEGMENTS)
            .map(|_| conn.data_frame(&engine, 1 << 14, &data))
            .collect();
        let first_seq = conn.seq;
        let mut send_batch = |engine: &mut Engine, host: &mut FakeHost, conn: &mut GuestConn| {
            for frame in &mut frames {
                set_seq(frame, conn.seq);
                conn.seq = conn.seq.wrapping_add(payload);
            }
            let mut batch = engine.batch(NOW, host, &mut out);
            batch.frames(frames.iter().map(Vec::as_slice));
            batch.finish();
            // One ACK for the whole batch; the remote end reads what came, as the guest's
            // next frames would find it had.
            assert_eq!(out.len(), 1, "one coalesced ACK per batch");
            host.remote_reads();
            out.clear();
        };
        // Once untimed, to see that the frames are what the engine takes in full.
        send_batch(&mut engine, &mut host, &mut conn);
        assert_eq!(host.sent(conn.sock), u64::from(SEGMENTS * payload));

        group.throughput(throughput(payload));
        group.bench_function(payload.to_string(), |b| {
            b.iter(|| send_batch(&mut engine, &mut host, &mut conn))
        });
        let sent = u64::from(conn.seq.wrapping_sub(first_seq));
        assert_eq!(
            host.sent(conn.sock) % (1 << 32),
            sent,
            "all data reached the host"
        );
        assert_eq!(engine.counters().tcp.bytes_to_host, host.sent(conn.sock));
    }
    group.finish();
}

fn tcp_host_to_guest(c: &mut Criterion) {
    let mut group = c.benchmark_group("tcp_host_to_guest");
    for payload in PAYLOADS {
        let mut engine = Engine::new(lab::config(), 1, NOW);
        let (mut host, mut out) = (FakeHost::new(), FrameQueue::new());
        host.endless_rx();
        let window = window_field(payload);
        let mss = payload as u16;
        let mut conn = GuestConn::connect(&mut engine, &mut host, &mut out, NOW, mss, window);
        let first_ack = conn.ack;
        let mut ack = conn.data_frame(&engine, window, &[]);

        // The host's data is there from the start: the engine fills the guest's window as
        // soon as it is open, and a readiness report changes nothing (a batch flushes when it
        // drops).
        engine
            .batch(NOW, &mut host, &mut out)
            .socket(conn.sock, SockEvent::Readable);
        assert_eq!(out.len(), SEGMENTS as usize, "a window's worth of segments");
        for (i, frame) in out.iter().enumerate() {
            let seg = segment_of(frame);
            assert_eq!(seg.flags & flags::ACK, flags::ACK);
            assert_eq!(seg.seq, conn.ack.wrapping_add(i as u32 * payload));
            assert_eq!(seg.payload.len(), payload as usize);
        }
        out.clear();

        group.throughput(throughput(payload));
        group.bench_function(payload.to_string(), |b| {
            b.iter(|| {
                // The guest acknowledges the window it got, and gets the next one.
                conn.ack = conn.ack.wrapping_add(SEGMENTS * payload);
                set_ack(&mut ack, conn.ack);
                let mut batch = engine.batch(NOW, &mut host, &mut out);
                batch.frame(&ack);
                batch.finish();
                assert_eq!(out.len(), SEGMENTS as usize, "a window's worth of segments");
                out.clear();
            })
        });
        let acked = u64::from(conn.ack.wrapping_sub(first_ack));
        assert_eq!(host.discarded(conn.sock) % (1 << 32), acked);
        assert_eq!(
            engine.counters().tcp.bytes_to_guest,
            host.discarded(conn.sock) + u64::from(SEGMENTS * payload),
            "the last window is in flight"
        );
    }
    group.finish();
}

fn answers(c: &mut Criterion) {
    let mut group = c.benchmark_group("answers");
    group.throughput(Throughput::Elements(1));
    // Each case: its name, the capture asking, and a look at the answer's first bytes past
    // the Ethernet header (where in them, what it must be).
    let cases = [
        // IPv4, UDP from port 67, the DHCP message a BOOTREPLY.
        (
            "dhcp_discover_offer",
            "dhcp-udhcpc-discover.pcap",
            20,
            &[0, 67][..],
            28,
            2,
        ),
        // IPv6, ICMPv6 type 134, Router Advertisement.
        ("ndp_rs_ra", "ndp-kernel-rs.pcap", 6, &[58][..], 40, 134),
    ];
    for (name, capture, port_at, port, msg_at, msg_type) in cases {
        let frame = lab::captured(capture);
        let mut engine = Engine::new(lab::config(), 1, NOW);
        let mut out = FrameQueue::new();
        engine.batch(NOW, &mut NoSockets, &mut out).frame(&frame);
        let answer = &out.get(0).expect("an answer")[ETH_HEADER_LEN..];
        assert_eq!(&answer[port_at..port_at + port.len()], port, "{name}");
        assert_eq!(answer[msg_at], msg_type, "{name}");
        out.clear();
        let mut asked = 1u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut no_sockets = NoSockets;
                let mut batch = engine.batch(NOW, &mut no_sockets, &mut out);
                batch.frame(&frame);
                batch.finish();
                assert_eq!(out.len(), 1, "one answer");
                out.clear();
                asked += 1;
            })
        });
        let counters = engine.counters();
        assert_eq!(counters.dhcp_answered + counters.ndp_answered, asked);
        assert_eq!(counters.malformed + counters.ignored, 0);
    }
    group.finish();
}

criterion_group!(benches, tcp_guest_to_host, tcp_host_to_guest, answers);
criterion_main!(benches);
