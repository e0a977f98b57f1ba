//! The engine driven through a model of the guest's virtqueues gives the same frames as
//! through the stream socket: no I/O, no root. The guest's frames (from the captures in
//! testdata/: ARP, DHCP, NDP, DHCPv6) reach one engine through qemu's stream framing and a
//! second, identical one through transmit chains of odd sizes (the header cut anywhere, a
//! chain that ends inside the header refused on the way); each engine's answers leave through
//! its path, the second's into receive chains of odd sizes, several per frame, with the ring
//! full now and then (frames wait and go once the guest adds buffers). The guest side of the
//! model reassembles what it received; both paths must give the same frames, in order.
//!
//! Then whole TCP exchanges in the simulator: the main guest's frames leave through the
//! receive queue model ([`VirtqLink`]), which lends the engine's output queue its buffers
//! (os-shim's `vhost_user::lend`: host data peeked into them, headers written in front on
//! publication) and places the frames as the device does (`vhost_user::place_frames`: lent
//! ones published, the rest copied, a flow's consecutive copied segments as one frame the
//! guest cuts), with buffers of odd sizes and a ring that runs short; the guest must get byte
//! for byte the frames the plain link gives. The guest's frames reach
//! the engine through the transmit queue model, in descriptors of odd sizes: split as the
//! link splits them (os-shim's `vhost_user::tx_split`), the TCP payload beyond the copied head
//! left in guest memory and sent (or stashed) through checked copies by the simulator's
//! sockets, the chains given back after the engine's batch. Bursts of datagrams from the
//! host reach the guest as the plain link gives them, as runs the guest cuts when it takes
//! them (GUEST_USO) and one by one when it doesn't.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use os_shim::vhost_user::driver_model::{cut_segmented, Buffer, DriverQueue};
use os_shim::vhost_user::lend::{GuestOffloads, LendStats, RxLend, KEEP_ON_RING};
use os_shim::vhost_user::place_frames;
use os_shim::vhost_user::tx_split::{guest_frame, take_tx_frame, TxRests, TxTail};
use os_shim::vhost_user::virtq::{self, ChainError, RxOutcome, RxScratch, NET_HDR_LEN};
use sans_io::engine::Engine;
use sans_io::flow::NoSockets;
use sans_io::time::Instant;
use sans_io::wire::lent::{LentArea, PayloadLender};
use sans_io::wire::offload::{finish_partial_checksum, partial_checksum_at, L4Checksum};
use sans_io::wire::stream::{self, StreamDecoder};
use sans_io::wire::FrameQueue;
use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::world::{Direction, LinkModel, TransmitTo, World};
use sim::{App, Pattern, Scenario};
use virtio_queue::{Queue, QueueT};
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
/// Room for each receive buffer (they are recycled: one slot per ring entry).
const SLOT: u64 = 4096;
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
    let mut guest = RxGuest::new(&mem, rx_sizes);
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
    guest.assert_no_frame_cut();
    if rx_offered < 4 {
        assert!(waited, "a ring of {rx_offered} buffers never filled up");
    }
    guest.delivered
}

/// The guest's side of the receive queue: the buffers it offered (one slot of memory per ring
/// entry, reused once the buffer comes back), the frames it got.
struct RxGuest {
    rx: DriverQueue,
    buffers: HashMap<u16, (u64, u32)>,
    free: Vec<u64>,
    sizes: Vec<u32>,
    next_size: usize,
    delivered: Vec<Vec<u8>>,
    /// The buffers of the frame being reassembled.
    partial: Vec<u8>,
    used: u16,
    /// Large segments (GUEST_TSO) or runs of datagrams (GUEST_USO) received, and the
    /// segments or datagrams they were cut into.
    large: u64,
    cut: u64,
}

impl RxGuest {
    fn new(mem: &GuestMemoryMmap, sizes: &[u32]) -> RxGuest {
        assert!(sizes.iter().all(|&s| u64::from(s) <= SLOT));
        RxGuest {
            rx: DriverQueue::new(mem, GuestAddress(RX_RINGS), QUEUE),
            buffers: HashMap::new(),
            free: (0..u64::from(QUEUE))
                .rev()
                .map(|i| RX_DATA + i * SLOT)
                .collect(),
            sizes: sizes.to_vec(),
            next_size: 0,
            delivered: Vec::new(),
            partial: Vec::new(),
            used: 0,
            large: 0,
            cut: 0,
        }
    }

    /// Offers up to `count` more buffers, as many as the ring has room for.
    fn offer(&mut self, mem: &GuestMemoryMmap, count: usize) {
        for _ in 0..count {
            let Some(addr) = self.free.pop() else { return };
            let len = self.sizes[self.next_size % self.sizes.len()];
            self.next_size += 1;
            let head = self.rx.add_chain(
                mem,
                &[Buffer {
                    addr,
                    len,
                    writable: true,
                }],
            );
            self.buffers.insert(head, (addr, len));
        }
    }

    /// What the guest received: used buffers, merged as each frame's header says (a buffer
    /// smaller than the header, which a driver shouldn't offer, gets the header's start);
    /// a checksum left to finish is finished, as the guest's kernel would, and a large
    /// segment is cut into the segments its header says (smoltcp takes nothing larger than
    /// its MTU; a kernel would take it whole, as its receive offload had merged it).
    fn collect(&mut self, mem: &GuestMemoryMmap) {
        while let Some((head, len)) = self.rx.take_used(mem) {
            let (addr, size) = self.buffers.remove(&head).expect("a buffer we offered");
            self.free.push(addr);
            assert!(len <= size, "wrote {len} bytes into a {size}-byte buffer");
            let mut part = vec![0u8; len as usize];
            mem.read_slice(&mut part, GuestAddress(addr)).unwrap();
            self.partial.extend_from_slice(&part);
            self.used += 1;
            if self.partial.len() < NET_HDR_LEN {
                continue;
            }
            let bytes = &self.partial;
            let count = u16::from_le_bytes([bytes[10], bytes[11]]);
            assert!(
                count >= self.used,
                "{} buffers used for a frame that says {count}",
                self.used
            );
            if self.used == count {
                let mut frame = bytes[NET_HDR_LEN..].to_vec();
                if let Some(pieces) = cut_segmented(&bytes[..NET_HDR_LEN], &frame) {
                    self.large += 1;
                    self.cut += pieces.len() as u64;
                    self.delivered.extend(pieces);
                } else {
                    if bytes[0] & 1 != 0 {
                        let at = partial_checksum_at(&frame).expect("a TCP or UDP frame");
                        assert_eq!(
                            (
                                u16::from_le_bytes([bytes[6], bytes[7]]),
                                u16::from_le_bytes([bytes[8], bytes[9]])
                            ),
                            (at.start, at.offset),
                            "where the checksum is"
                        );
                        finish_partial_checksum(&mut frame);
                    } else {
                        assert_eq!(&bytes[..10], &[0u8; 10], "no offload fields set");
                    }
                    self.delivered.push(frame);
                }
                self.partial.clear();
                self.used = 0;
            }
        }
    }

    fn assert_no_frame_cut(&self) {
        assert_eq!(self.used, 0, "a frame's buffers were used only in part");
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
        // A frame (at most 1500 bytes and its header here) must fit the ring's entries: a
        // cycle of tiny buffers would leave it waiting for good.
        let (cycle, sum) = (rx_sizes.len() as u32, rx_sizes.iter().sum::<u32>());
        prop_assume!(cycle * (1512u32.div_ceil(sum) + 1) <= u32::from(QUEUE) / 2);
        let frames = guest_frames();
        let by_stream = through_stream(&frames);
        let by_queues = through_virtqueues(&frames, &tx_sizes, &rx_sizes, rx_offered);
        prop_assert_eq!(by_queues, by_stream);
    }
}

/// The receive queue as a device link in the simulator: lent payloads published, the other
/// frames copied, the guest reassembling and adding buffers of odd sizes as it goes (up to
/// `outstanding` at a time: the ring runs short of them, and the engine then builds frames in
/// its own queue).
struct VirtqLink(Rc<RefCell<RxModel>>, TxModel);

/// Frames the transmit model hands over per read at most (as the link's `TX_BATCH`).
const TX_READ: usize = 64;

/// The transmit queue's two sides: the guest's driver putting frames in descriptors of odd
/// sizes, the device taking them as the link does.
struct TxModel {
    mem: Arc<GuestMemoryMmap>,
    driver: DriverQueue,
    queue: Queue,
    sizes: Vec<u32>,
    slots: Vec<Vec<u8>>,
    tails: Vec<TxTail>,
    lens: Vec<usize>,
    heads: Vec<u16>,
    /// Frames, and bytes, whose payload stayed in the guest's memory.
    in_place_frames: u64,
    in_place_bytes: u64,
}

impl TxModel {
    fn new(mem: Arc<GuestMemoryMmap>, sizes: &[u32]) -> TxModel {
        let driver = DriverQueue::new(&*mem, GuestAddress(TX_RINGS), TX_QUEUE);
        let queue = driver.device_queue();
        TxModel {
            mem,
            driver,
            queue,
            sizes: sizes.to_vec(),
            slots: vec![vec![0u8; 65600]; TX_READ],
            tails: (0..TX_READ).map(|_| TxTail::new()).collect(),
            lens: vec![0; TX_READ],
            heads: Vec::new(),
            in_place_frames: 0,
            in_place_bytes: 0,
        }
    }

    /// The guest queues `frames` (each with its header, in descriptors cut as `sizes` say)
    /// as far as its transmit buffers go, from `first`; returns how many.
    fn queue_frames(&mut self, frames: &[Vec<u8>]) -> usize {
        let mut at = TX_DATA;
        let mut n = 0;
        for f in frames.iter().take(TX_READ) {
            let mut bytes = vec![0u8; NET_HDR_LEN];
            bytes.extend_from_slice(f);
            if at + bytes.len() as u64 > RX_DATA && n > 0 {
                break;
            }
            self.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
            let mut chain = Vec::new();
            let mut a = at;
            for len in cut(bytes.len(), &self.sizes) {
                chain.push(Buffer {
                    addr: a,
                    len,
                    writable: false,
                });
                a += u64::from(len);
            }
            self.driver.add_chain(&*self.mem, &chain);
            at = (a + 64).next_multiple_of(64);
            n += 1;
        }
        n
    }
}

struct RxModel {
    mem: Arc<GuestMemoryMmap>,
    guest: RxGuest,
    queue: Queue,
    lend: RxLend,
    scratch: RxScratch,
    outstanding: usize,
    /// Frames the lender had no room for, built in the engine's queue and copied.
    copied_tcp: u64,
    /// Runs of copied frames placed as one frame, and the frames they carried.
    runs: u64,
    run_frames: u64,
    /// Whether the guest takes large TCP segments (GUEST_TSO4/6), and runs of datagrams as
    /// one frame (GUEST_USO4/6).
    tso: bool,
    uso: bool,
}

impl RxModel {
    fn refill(&mut self) {
        let out = self.guest.buffers.len();
        self.guest
            .offer(&self.mem, self.outstanding.saturating_sub(out));
    }
}

impl VirtqLink {
    fn new(
        sizes: &[u32],
        outstanding: usize,
        tx_sizes: &[u32],
    ) -> (VirtqLink, Rc<RefCell<RxModel>>) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let guest = RxGuest::new(&mem, sizes);
        let queue = guest.rx.device_queue();
        let mut model = RxModel {
            mem: Arc::new(mem),
            guest,
            queue,
            lend: RxLend::new(),
            scratch: RxScratch::new(QUEUE),
            outstanding,
            copied_tcp: 0,
            runs: 0,
            run_frames: 0,
            tso: false,
            uso: false,
        };
        model.refill();
        let tx = TxModel::new(model.mem.clone(), tx_sizes);
        let shared = Rc::new(RefCell::new(model));
        (VirtqLink(shared.clone(), tx), shared)
    }
}

/// The output queue's handle on the model's buffers.
struct ModelLender(Rc<RefCell<RxModel>>);

impl PayloadLender for ModelLender {
    fn reserve(&mut self, header_room: usize, lens: &[usize], areas: &mut Vec<LentArea>) -> usize {
        let m = &mut *self.0.borrow_mut();
        m.lend
            .reserve(&mut m.queue, &m.mem, KEEP_ON_RING, header_room, lens, areas)
    }

    fn large_tcp_segments(&self, _ipv6: bool) -> bool {
        self.0.borrow().tso
    }

    fn fill(&mut self, at: usize, data: &[u8]) {
        self.0.borrow_mut().lend.fill(at, data);
    }

    fn settle(&mut self, filled: &[usize]) -> u64 {
        self.0.borrow_mut().lend.settle(filled)
    }
}

impl LinkModel for VirtqLink {
    fn payload_lender(&mut self) -> Option<Box<dyn PayloadLender>> {
        Some(Box::new(ModelLender(self.0.clone())))
    }

    fn transmit(&mut self, frames: &[Vec<u8>], to_engine: &mut TransmitTo<'_>) {
        let tx = &mut self.1;
        let mut left = frames;
        while !left.is_empty() {
            let n = tx.queue_frames(left);
            left = &left[n..];
            tx.heads.clear();
            for i in 0..n {
                let chain = tx
                    .queue
                    .pop_descriptor_chain(&*tx.mem)
                    .expect("a chain per frame");
                tx.heads.push(chain.head_index());
                let split = take_tx_frame(&*tx.mem, chain, &mut tx.slots[i], &mut tx.tails[i])
                    .expect("a good chain");
                tx.lens[i] = split.head;
                if split.tail > 0 {
                    tx.in_place_frames += 1;
                    tx.in_place_bytes += split.tail as u64;
                }
            }
            let rests = TxRests {
                mem: &*tx.mem,
                tails: &tx.tails[..n],
            };
            let (slots, lens, tails) = (&tx.slots, &tx.lens, &tx.tails);
            to_engine(
                &mut (0..n).map(|i| guest_frame(i, &slots[i][..lens[i]], &tails[i])),
                &rests,
            );
            // The batch is over: the chains go back, in order.
            for &head in &tx.heads {
                tx.queue.add_used(&*tx.mem, head, 0).unwrap();
            }
            for &head in &tx.heads {
                assert_eq!(tx.driver.take_used(&*tx.mem), Some((head, 0)));
            }
        }
    }

    fn carry(&mut self, out: &FrameQueue, delivered: &mut Vec<Vec<u8>>) {
        let m = &mut *self.0.borrow_mut();
        m.lend.rewind(&mut m.queue);
        let partial = out.l4_checksum() == L4Checksum::Partial;
        m.copied_tcp += out
            .entries()
            .filter(|(frame, lent)| {
                lent.is_none()
                    && partial
                    && partial_checksum_at(frame).is_some()
                    && frame.len() > 1000
            })
            .count() as u64;
        let guest = GuestOffloads {
            csum: true,
            tso4: m.tso,
            tso6: m.tso,
            uso4: m.uso,
            uso6: m.uso,
        };
        // The device's own placement (runs of copied frames as one, lent frames published);
        // where the ring runs short, the guest takes what it got and adds buffers, beyond its
        // usual count.
        let mut next = 0;
        loop {
            let placed = place_frames(
                &mut m.queue,
                &m.mem,
                &mut m.lend,
                guest,
                &mut m.scratch,
                out,
                &mut next,
            );
            assert_eq!(
                (placed.frames_dropped, placed.bad_chains),
                (0, 0),
                "frames lost placing them"
            );
            m.runs += placed.runs_out;
            m.run_frames += placed.run_frames_out;
            if next == out.len() {
                break;
            }
            m.guest.collect(&m.mem);
            m.guest.offer(&m.mem, 64);
        }
        m.guest.collect(&m.mem);
        m.guest.assert_no_frame_cut();
        delivered.append(&mut m.guest.delivered);
        m.refill();
    }
}

/// A link model's receive buffer sizes, how many the guest keeps offered, and its transmit
/// descriptor sizes.
type ModelShape<'a> = (&'a [u32], usize, &'a [u32]);

/// A download and an upload at once, through the plain link or the model's.
fn exchange(seed: u64, link: Option<ModelShape<'_>>) -> (World, Option<VirtqStats>) {
    exchange_with(seed, link, false)
}

/// The same, the model's guest taking large TCP segments if `tso`.
fn exchange_with(
    seed: u64,
    link: Option<ModelShape<'_>>,
    tso: bool,
) -> (World, Option<VirtqStats>) {
    let mut w = Scenario::new(seed)
        .remote_server(
            &format!("{REMOTE}:19"),
            App::source_pattern(Pattern(5), 400_000),
        )
        .remote_server(&format!("{REMOTE}:9"), App::sink())
        .build();
    w.leave_checksums(L4Checksum::Partial);
    let model = link.map(|(sizes, outstanding, tx_sizes)| {
        let (link, model) = VirtqLink::new(sizes, outstanding, tx_sizes);
        model.borrow_mut().tso = tso;
        let tx = Rc::new(RefCell::new((0, 0)));
        w.through_link(Box::new(Counted(link, tx.clone())));
        (model, tx)
    });
    let down = w.guest_connect(addr(&format!("{REMOTE}:19")), App::sink());
    w.guest_connect(
        addr(&format!("{REMOTE}:9")),
        App::source_pattern(Pattern(6), 100_000),
    );
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    Pattern(5)
        .check(w.guest_conn(down).received(), 400_000)
        .unwrap();
    let up = w.host_conn(w.host.conns_to(addr(&format!("{REMOTE}:9")))[0]);
    Pattern(6).check(up.received(), 100_000).unwrap();
    w.assert_no_violations();
    (w, model)
}

/// What a model link saw: its receive side, and the frames and bytes its transmit side left
/// in the guest's memory.
type VirtqStats = (Rc<RefCell<RxModel>>, Rc<RefCell<(u64, u64)>>);

/// A [`VirtqLink`] whose transmit counts the test reads after the world has it.
struct Counted(VirtqLink, Rc<RefCell<(u64, u64)>>);

impl LinkModel for Counted {
    fn payload_lender(&mut self) -> Option<Box<dyn PayloadLender>> {
        self.0.payload_lender()
    }

    fn carry(&mut self, out: &FrameQueue, delivered: &mut Vec<Vec<u8>>) {
        self.0.carry(out, delivered)
    }

    fn transmit(&mut self, frames: &[Vec<u8>], to_engine: &mut TransmitTo<'_>) {
        self.0.transmit(frames, to_engine);
        *self.1.borrow_mut() = (self.0 .1.in_place_frames, self.0 .1.in_place_bytes);
    }
}

fn to_guest(w: &World) -> Vec<Vec<u8>> {
    frames_of(w, Direction::EngineToGuest)
}

fn frames_of(w: &World, dir: Direction) -> Vec<Vec<u8>> {
    w.transcript
        .iter()
        .filter(|(_, d, _)| *d == dir)
        .map(|(_, _, f)| f.clone())
        .collect()
}

#[test]
fn tcp_data_in_lent_buffers_gives_the_plain_links_frames() {
    for (seed, sizes, outstanding, tx_sizes) in [
        (1, &[1526u32, 4096, 333, 2049][..], 200, &[12u32, 1500][..]),
        (2, &[97, 1000, 4000, 1], 120, &[5, 7, 300, 1999, 61, 4096]),
        // Few buffers: the lender runs out, frames are built in the queue and copied too.
        (3, &[1500, 3000], 40, &[266, 1, 3333]),
    ] {
        let (plain, _) = exchange(seed, None);
        let (lent, model) = exchange(seed, Some((sizes, outstanding, tx_sizes)));
        let (model, tx) = model.unwrap();
        let (tx_frames, tx_bytes) = *tx.borrow();
        assert!(
            tx_frames > 5 && tx_bytes > 50_000,
            "seed {seed}: {tx_frames} guest frames, {tx_bytes} bytes sent from its memory"
        );
        let model = model.borrow();
        let LendStats { frames, bytes, .. } = model.lend.stats;
        assert!(
            frames > 5 && bytes > 100_000,
            "seed {seed}: {frames} frames, {bytes} bytes lent"
        );
        if outstanding <= 40 {
            assert!(
                model.copied_tcp > 0,
                "seed {seed}: the ring never ran short"
            );
        }
        eprintln!(
            "seed {seed}: {frames} frames, {bytes} bytes lent, {} copied; {tx_frames} guest \
             frames, {tx_bytes} bytes sent from its memory",
            model.copied_tcp
        );
        assert_eq!(
            frames_of(&plain, Direction::GuestToEngine),
            frames_of(&lent, Direction::GuestToEngine),
            "seed {seed}: the guest's frames"
        );
        let (a, b) = (to_guest(&plain), to_guest(&lent));
        assert!(a.len() > 100, "seed {seed}: only {} frames", a.len());
        assert_eq!(a.len(), b.len(), "seed {seed}: frame counts");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("seed {seed}: frame {i} differs");
        }
        assert_eq!(plain.counters(), lent.counters());
    }
}

#[test]
fn large_segments_in_lent_buffers_carry_the_plain_links_bytes() {
    for (seed, sizes, outstanding, fit) in [
        (1, &[1526u32, 4096, 333, 2049][..], 200, true),
        (2, &[97, 1000, 4000, 1], 120, true),
        // Too few buffers for most large segments: frames of one segment are lent instead,
        // and copied where none fits.
        (3, &[1500, 3000], 44, false),
    ] {
        let (plain, _) = exchange(seed, None);
        let (w, model) = exchange_with(seed, Some((sizes, outstanding, &[1500])), true);
        let (model, _) = model.unwrap();
        let model = model.borrow();
        let LendStats {
            frames,
            bytes,
            large_segments,
            ..
        } = model.lend.stats;
        let (large, cut) = (model.guest.large, model.guest.cut);
        eprintln!(
            "seed {seed}: {frames} frames, {bytes} bytes lent, {large_segments} large \
             ({cut} segments), {} copied, {} runs of {} of them",
            model.copied_tcp, model.runs, model.run_frames
        );
        assert_eq!(
            large,
            large_segments + model.runs,
            "seed {seed}: large segments received"
        );
        if fit {
            assert!(
                large > 5 && cut > 2 * large,
                "seed {seed}: {large} large segments, cut into {cut}"
            );
        } else {
            // Mostly frames of one segment lent; what the lender had no room for is copied,
            // and a flow's consecutive copied segments go as one frame the guest cuts.
            assert!(
                frames > 20 && frames > 4 * large_segments,
                "seed {seed}: {large_segments} large segments, {frames} frames lent"
            );
            assert!(
                model.runs > 0 && model.run_frames > 2 * model.runs,
                "seed {seed}: {} runs of {} copied frames",
                model.runs,
                model.run_frames
            );
        }
        assert!(bytes > 100_000, "seed {seed}: {bytes} bytes lent");
        // The same bytes (the exchange checked them), none lost or sent again for it.
        let (p, l) = (&plain.counters().tcp, &w.counters().tcp);
        assert_eq!(
            (p.retransmissions, p.bytes_to_guest),
            (l.retransmissions, l.bytes_to_guest),
            "seed {seed}"
        );
    }
}

/// What a guest received of UDP: (from, to, datagram).
type Datagrams = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;

/// Bursts of datagrams from remotes to the guest, both families, through the plain link or
/// the model's (with `Some(uso)`: taking runs of datagrams as one frame if `uso`): what the
/// guest received, and the model.
fn udp_bursts(seed: u64, uso: Option<bool>) -> (Datagrams, Option<Rc<RefCell<RxModel>>>) {
    let mut w = Scenario::new(seed).build();
    w.leave_checksums(L4Checksum::Partial);
    let model = uso.map(|uso| {
        let (link, model) = VirtqLink::new(&[4096, 1526, 333], 200, &[1500]);
        model.borrow_mut().uso = uso;
        w.through_link(Box::new(link));
        model
    });
    let guest6 = IpAddr::V6(w.engine.config().ip6.as_ref().unwrap().addr);
    let flows = [
        (
            SocketAddr::new(HOST_ADDR.parse().unwrap(), 40010),
            addr(&format!("{REMOTE}:9")),
        ),
        (SocketAddr::new(guest6, 40011), addr("[2001:db8:2::10]:9")),
    ];
    for (guest, remote) in flows {
        w.guest_udp(guest, remote, b"open");
    }
    w.run_for(Duration::from_millis(10));
    let socks: Vec<_> = w.host.udp_socks().keys().copied().collect();
    assert_eq!(socks.len(), 2);
    // Runs of equal datagrams, each ended by a shorter one (the last of a run may be), the
    // flows' datagrams interleaved now and then.
    let mut sent = 0;
    for i in 0..150u32 {
        let len = if i % 37 == 36 { 300 } else { 1000 };
        let mut d = vec![(i % 251) as u8; len];
        d[..4].copy_from_slice(&i.to_be_bytes());
        let s = socks[usize::from(i % 50 >= 45)];
        w.host.udp_peer_send(s, &d);
        sent += 1;
    }
    let all = w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == sent);
    assert!(
        all,
        "{} of {sent} datagrams; {}",
        w.udp_at_guest().len(),
        w.diagnose()
    );
    w.assert_no_violations();
    (w.udp_at_guest(), model)
}

#[test]
fn runs_of_datagrams_reach_the_guest_as_the_plain_link_gives_them() {
    let (plain, _) = udp_bursts(11, None);
    for uso in [false, true] {
        let (got, model) = udp_bursts(11, Some(uso));
        assert!(got == plain, "uso {uso}: the datagrams differ");
        let m = model.unwrap();
        let m = m.borrow();
        eprintln!(
            "uso {uso}: {} runs of {} datagrams, {} cut",
            m.runs, m.run_frames, m.guest.cut
        );
        if uso {
            assert!(
                m.runs > 3 && m.run_frames > 2 * m.runs,
                "{} runs of {} datagrams",
                m.runs,
                m.run_frames
            );
            assert_eq!((m.guest.large, m.guest.cut), (m.runs, m.run_frames));
        } else {
            assert_eq!((m.runs, m.guest.large), (0, 0));
        }
    }
}

/// A bulk upload into a small send buffer (partial writes mid-batch: the rest of a segment
/// stashed, later ones dropped and sent again), through the plain link or the model's.
fn upload_cut_short(seed: u64, tx_sizes: Option<&[u32]>) -> (World, u64, u64) {
    let server = format!("{REMOTE}:19");
    let len = 1 << 20;
    let mut w = Scenario::new(seed)
        .host(|h| {
            h.sndbuf = 20_000;
            h.peer_rcvbuf = 16 * 1024;
            h.send_space_slack = 3000;
        })
        .remote_server(&server, App::slow_sink(20_000))
        .build();
    w.leave_checksums(L4Checksum::Partial);
    let tx = Rc::new(RefCell::new((0, 0)));
    if let Some(tx_sizes) = tx_sizes {
        let (link, _) = VirtqLink::new(&[4096], 200, tx_sizes);
        w.through_link(Box::new(Counted(link, tx.clone())));
    }
    w.guest_connect(addr(&server), App::source_pattern(Pattern(9), len));
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(9).check(h.received(), len).unwrap();
    w.assert_no_violations();
    let (frames, bytes) = *tx.borrow();
    (w, frames, bytes)
}

#[test]
fn an_upload_cut_short_stashes_from_guest_memory_what_the_plain_link_stashes() {
    let (plain, _, _) = upload_cut_short(71, None);
    let (in_place, frames, bytes) = upload_cut_short(71, Some(&[3, 9, 250, 1501, 77]));
    let c = &in_place.counters().tcp;
    assert!(
        c.stash_uses > 0 && c.no_room_drops > 0,
        "no partial write or drop to test: {c:?}"
    );
    assert!(
        frames > 100 && bytes > 500_000,
        "{frames} frames, {bytes} bytes sent from the guest's memory"
    );
    assert_eq!(plain.counters(), in_place.counters());
    for dir in [Direction::GuestToEngine, Direction::EngineToGuest] {
        let (a, b) = (frames_of(&plain, dir), frames_of(&in_place, dir));
        assert_eq!(a.len(), b.len(), "{dir:?}: frame counts");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("{dir:?}: frame {i} differs");
        }
    }
}
