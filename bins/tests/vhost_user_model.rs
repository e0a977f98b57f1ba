//! The engine driven through a model of the guest's virtqueues gives the same frames as
//! through the stream socket: no I/O, no root. The guest's frames (from the captures in
//! testdata/: ARP, DHCP, NDP, DHCPv6) reach one engine through qemu's stream framing and a
//! second, identical one through transmit chains of odd sizes (the header cut anywhere, a
//! chain that ends inside the header refused on the way); each engine's answers leave through
//! its path, the second's into receive chains of odd sizes, several per frame, with the ring
//! full now and then (frames wait and go once the guest adds buffers). The guest side of the
//! model reassembles what it received; both paths must give the same frames, in order.

use std::collections::HashMap;

use proptest::prelude::*;

use os_shim::vhost_user::driver_model::{Buffer, DriverQueue};
use os_shim::vhost_user::virtq::{self, ChainError, RxOutcome, RxScratch, NET_HDR_LEN};
use sans_io::engine::Engine;
use sans_io::flow::NoSockets;
use sans_io::time::Instant;
use sans_io::wire::stream::{self, StreamDecoder};
use sans_io::wire::FrameQueue;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 4 << 20;
/// Receive ring entries; the transmit ring has room for every frame's descriptors at once.
const QUEUE: u16 = 256;
const TX_QUEUE: u16 = 4096;
/// Where each queue's rings and buffers are.
const TX_RINGS: u64 = 0;
const RX_RINGS: u64 = 0x40000;
const TX_DATA: u64 = 0x100000;
const RX_DATA: u64 = 0x200000;
const SEED: u64 = 7;

/// The guest's frames of the captures: those not from passt.
fn guest_frames() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/captures/");
    let config = sim::fuzzing::config();
    let mut frames = Vec::new();
    for name in [
        "arp-request.pcap",
        "dhcp-udhcpc-discover.pcap",
        "dhcp-dhclient-request.pcap",
        "ndp-kernel-rs.pcap",
        "ndp-kernel-ns.pcap",
        "dhcpv6-dhclient-solicit.pcap",
    ] {
        let bytes = std::fs::read(format!("{dir}{name}")).expect(name);
        for r in sim::pcapfile::read(&bytes).expect(name) {
            if r.frame.get(6..12) != Some(&config.our_mac.0[..]) {
                frames.push(r.frame);
            }
        }
    }
    assert!(frames.len() >= 6, "captures gave {} frames", frames.len());
    frames
}

/// The frames engine answers with, fed `frames` in one batch.
fn answers(engine: &mut Engine, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = FrameQueue::new();
    let mut sockets = NoSockets;
    let mut batch = engine.batch(Instant::ZERO, &mut sockets, &mut out);
    batch.frames(frames.iter().copied());
    batch.finish();
    out.iter().map(<[u8]>::to_vec).collect()
}

/// The stream path: framing, a decoder reading it in one go, the engine, its answers.
fn through_stream(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut wire = Vec::new();
    for f in frames {
        wire.extend_from_slice(&stream::header(f.len()));
        wire.extend_from_slice(f);
    }
    let mut decoder = StreamDecoder::new(wire.len() + 64, 65600);
    let room = decoder.spare();
    room[..wire.len()].copy_from_slice(&wire);
    decoder.filled(wire.len());
    let mut decoded = Vec::new();
    while let Ok(Some(f)) = decoder.next_frame() {
        decoded.push(f.to_vec());
    }
    assert_eq!(decoded.len(), frames.len());
    let mut engine = Engine::new(sim::fuzzing::config(), SEED, Instant::ZERO);
    let refs: Vec<&[u8]> = decoded.iter().map(Vec::as_slice).collect();
    answers(&mut engine, &refs)
}

/// Cuts `len` bytes into pieces of the given sizes (cycled), the last one what is left.
fn cut(len: usize, sizes: &[u32]) -> Vec<u32> {
    let mut pieces = Vec::new();
    let mut left = len as u32;
    for &s in sizes.iter().cycle() {
        if left == 0 {
            break;
        }
        let n = s.clamp(1, left);
        pieces.push(n);
        left -= n;
    }
    pieces
}

/// The virtqueue path, with transmit descriptors cut as `tx_sizes` say and receive buffers of
/// `rx_sizes`, `rx_offered` of them at first, the rest after the ring filled up.
fn through_virtqueues(
    frames: &[Vec<u8>],
    tx_sizes: &[u32],
    rx_sizes: &[u32],
    rx_offered: usize,
) -> Vec<Vec<u8>> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();

    // Transmit: each frame with its header, in descriptors of odd sizes; one chain that ends
    // inside the header first, which must be refused without disturbing the rest.
    let mut tx = DriverQueue::new(&mem, GuestAddress(TX_RINGS), TX_QUEUE);
    let mut at = TX_DATA;
    tx.add_chain(
        &mem,
        &[Buffer {
            addr: at,
            len: 5,
            writable: false,
        }],
    );
    for f in frames {
        let mut bytes = vec![0u8; NET_HDR_LEN];
        bytes.extend_from_slice(f);
        mem.write_slice(&bytes, GuestAddress(at)).unwrap();
        let mut chain = Vec::new();
        let mut a = at;
        for len in cut(bytes.len(), tx_sizes) {
            chain.push(Buffer {
                addr: a,
                len,
                writable: false,
            });
            a += u64::from(len);
        }
        tx.add_chain(&mem, &chain);
        at += bytes.len() as u64 + 64;
    }
    let mut queue = tx.device_queue();
    let mut buf = vec![0u8; 65600];
    let mut received = Vec::new();
    let mut refused = Vec::new();
    while let Some(chain) = queue.pop_descriptor_chain(&mem) {
        match virtq::read_tx_frame(&mem, chain, &mut buf) {
            Ok(len) => received.push(buf[..len].to_vec()),
            Err(e) => refused.push(e),
        }
    }
    assert_eq!(refused, vec![ChainError::ShortHeader]);
    assert_eq!(&received, frames, "transmit chains carried other frames");

    let mut engine = Engine::new(sim::fuzzing::config(), SEED, Instant::ZERO);
    let refs: Vec<&[u8]> = received.iter().map(Vec::as_slice).collect();
    let out = answers(&mut engine, &refs);

    // Receive: buffers of odd sizes; when the ring is full, the rest wait for more.
    let mut guest = RxGuest {
        rx: DriverQueue::new(&mem, GuestAddress(RX_RINGS), QUEUE),
        buffers: HashMap::new(),
        next_buffer: RX_DATA,
        sizes: rx_sizes.iter().copied().cycle(),
        delivered: Vec::new(),
    };
    guest.offer(&mem, rx_offered);
    let mut queue = guest.rx.device_queue();
    let mut scratch = RxScratch::new(QUEUE);
    let mut waited = false;
    for f in &out {
        loop {
            match virtq::write_rx_frame(&mut queue, &mem, f, None, &mut scratch) {
                RxOutcome::Placed(_) => break,
                RxOutcome::NoRoom => {
                    // The guest empties its ring, then adds buffers.
                    waited = true;
                    guest.collect(&mem);
                    guest.offer(&mem, 64);
                }
                RxOutcome::Bad(e) => panic!("receive chain refused: {e}"),
            }
        }
    }
    guest.collect(&mem);
    if rx_offered < 4 {
        assert!(waited, "a ring of {rx_offered} buffers never filled up");
    }
    guest.delivered
}

/// The guest's side of the receive queue: the buffers it offered, the frames it got.
struct RxGuest<I: Iterator<Item = u32>> {
    rx: DriverQueue,
    buffers: HashMap<u16, (u64, u32)>,
    next_buffer: u64,
    sizes: I,
    delivered: Vec<Vec<u8>>,
}

impl<I: Iterator<Item = u32>> RxGuest<I> {
    fn offer(&mut self, mem: &GuestMemoryMmap, count: usize) {
        for _ in 0..count {
            let len = self.sizes.next().unwrap();
            let buffer = Buffer {
                addr: self.next_buffer,
                len,
                writable: true,
            };
            let head = self.rx.add_chain(mem, &[buffer]);
            self.buffers.insert(head, (self.next_buffer, len));
            self.next_buffer += u64::from(len);
        }
    }

    /// What the guest received: used buffers, merged as each frame's header says (a buffer
    /// smaller than the header, which a driver shouldn't offer, gets the header's start).
    fn collect(&mut self, mem: &GuestMemoryMmap) {
        let mut bytes = Vec::new();
        let mut used = 0u16;
        while let Some((head, len)) = self.rx.take_used(mem) {
            let (addr, size) = self.buffers[&head];
            assert!(len <= size, "wrote {len} bytes into a {size}-byte buffer");
            let mut part = vec![0u8; len as usize];
            mem.read_slice(&mut part, GuestAddress(addr)).unwrap();
            bytes.extend_from_slice(&part);
            used += 1;
            if bytes.len() < NET_HDR_LEN {
                continue;
            }
            let count = u16::from_le_bytes([bytes[10], bytes[11]]);
            assert!(
                count >= used,
                "{used} buffers used for a frame that says {count}"
            );
            if used == count {
                assert_eq!(&bytes[..10], &[0u8; 10], "no offload fields set");
                self.delivered.push(bytes.split_off(NET_HDR_LEN));
                bytes.clear();
                used = 0;
            }
        }
        assert_eq!(used, 0, "a frame's buffers were used only in part");
    }
}

#[test]
fn the_virtqueue_path_gives_the_stream_paths_frames() {
    let frames = guest_frames();
    let by_stream = through_stream(&frames);
    assert!(
        by_stream.len() >= 4,
        "the engine answered {}",
        by_stream.len()
    );
    let by_queues = through_virtqueues(&frames, &[5, 7, 1, 300], &[7, 33, 100, 1000, 61], 3);
    assert_eq!(by_queues, by_stream);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_odd_cut_gives_the_same_frames(
        tx_sizes in prop::collection::vec(4u32..200, 1..6),
        rx_sizes in prop::collection::vec(1u32..2000, 1..6),
        rx_offered in 0usize..40,
    ) {
        let frames = guest_frames();
        let by_stream = through_stream(&frames);
        let by_queues = through_virtqueues(&frames, &tx_sizes, &rx_sizes, rx_offered);
        prop_assert_eq!(by_queues, by_stream);
    }
}
