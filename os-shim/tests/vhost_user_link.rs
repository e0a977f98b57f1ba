//! passt's vhost-user link against a front-end of our own instead of qemu (the `vhost` crate's
//! `Frontend` in a thread, guest memory in a memfd both sides map, the guest's side of the
//! rings from `driver_model`): the handshake qemu makes (rings disabled before the features
//! are set), frames both ways, receive buffers running out (frames wait, then go in order
//! once the guest adds buffers and kicks), the rings stopped and set up again as on a guest
//! reboot, and the end of a one-off link when the front-end hangs up. No root, no network.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use os_shim::qemu_socket::ReadStatus;
use os_shim::vhost_user::driver_model::{cut_segmented, Buffer, DriverQueue};
use os_shim::vhost_user::virtq::NET_HDR_LEN;
use os_shim::vhost_user::VhostUserLink;
use sans_io::wire::build::{udp_frame, Route};
use sans_io::wire::external::{ExternalPayloads, GuestFrame};
use sans_io::wire::gso;
use sans_io::wire::offload::{finish_partial_checksum, L4Checksum};
use sans_io::wire::{FrameQueue, MacAddr};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap,
    MmapRegion,
};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 2 << 20;
const SIZE: u16 = 64;
const RINGS: [u64; 2] = [0, 0x10000];
const RX_DATA: u64 = 0x40000;
const TX_DATA: u64 = 0x100000;
const WAIT: Duration = Duration::from_secs(10);

/// The guest's memory: a memfd, mapped here and sent to the link.
fn guest_memory() -> (std::fs::File, GuestMemoryMmap) {
    // SAFETY: memfd_create with a static name; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"vhost-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: just created, owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(MEM as u64).unwrap();
    let region = MmapRegion::from_file(FileOffset::new(file.try_clone().unwrap(), 0), MEM).unwrap();
    let region = GuestRegionMmap::new(region, GuestAddress(0)).unwrap();
    (file, GuestMemoryMmap::from_regions(vec![region]).unwrap())
}

/// What the front-end thread is told to do next.
enum Step {
    /// Stop both rings (GET_VRING_BASE) and set them up again, as qemu does when the guest
    /// resets its device.
    Reset,
    /// Hang up.
    Leave,
}

struct Rings {
    kick: [EventFd; 2],
    call: [EventFd; 2],
}

/// Sets up both rings as qemu does, at `host` (our mapping's address of guest address 0).
fn setup_rings(frontend: &mut Frontend, host: u64, rings: &Rings) {
    for (q, rings_at) in RINGS.iter().enumerate() {
        let base = host + rings_at;
        let desc = base;
        let avail = base + 16 * u64::from(SIZE);
        let used = (avail + 6 + 2 * u64::from(SIZE)).next_multiple_of(4);
        frontend.set_vring_num(q, SIZE).unwrap();
        let config = VringConfigData {
            queue_max_size: SIZE,
            queue_size: SIZE,
            flags: 0,
            desc_table_addr: desc,
            used_ring_addr: used,
            avail_ring_addr: avail,
            log_addr: None,
        };
        frontend.set_vring_addr(q, &config).unwrap();
        frontend.set_vring_base(q, 0).unwrap();
        frontend.set_vring_call(q, &rings.call[q]).unwrap();
        frontend.set_vring_kick(q, &rings.kick[q]).unwrap();
        frontend.set_vring_enable(q, true).unwrap();
    }
}

/// Runs the link (as passt's loop would) until `done` says so, bounded.
fn pump(
    link: &mut VhostUserLink,
    got: &mut Vec<Vec<u8>>,
    mut done: impl FnMut(&[Vec<u8>]) -> bool,
) -> ReadStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut pfd = libc::pollfd {
            fd: link.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd of ours, 10 ms at most.
        unsafe { libc::poll(&mut pfd, 1, 10) };
        let status = link
            .read_frames(&mut |frames, external| {
                got.extend(frames.map(|f| put_together(&f, external)))
            })
            .unwrap();
        if status != ReadStatus::Open || done(got) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the link did not get there in time"
        );
    }
}

/// All of a frame the link handed over, its rest (if it left one in place) read through it.
fn put_together(f: &GuestFrame<'_>, external: &dyn ExternalPayloads) -> Vec<u8> {
    let mut whole = f.head.to_vec();
    if let Some(rest) = f.rest {
        let at = whole.len();
        whole.resize(at + rest.len, 0);
        assert_eq!(external.read(rest, &mut whole[at..]), rest.len);
    }
    whole
}

fn frame(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| n.wrapping_add(i as u8)).collect()
}

/// The guest transmits `frames`, each in one chain, and kicks.
fn transmit(mem: &GuestMemoryMmap, tx: &mut DriverQueue, kick: &EventFd, frames: &[Vec<u8>]) {
    let headed: Vec<([u8; NET_HDR_LEN], Vec<u8>)> = frames
        .iter()
        .map(|f| ([0; NET_HDR_LEN], f.clone()))
        .collect();
    transmit_headed(mem, tx, kick, &headed);
}

/// [`transmit`] with each frame's virtio-net header.
fn transmit_headed(
    mem: &GuestMemoryMmap,
    tx: &mut DriverQueue,
    kick: &EventFd,
    frames: &[([u8; NET_HDR_LEN], Vec<u8>)],
) {
    let mut at = TX_DATA;
    for (header, f) in frames {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(f);
        mem.write_slice(&bytes, GuestAddress(at)).unwrap();
        tx.add_chain(
            mem,
            &[Buffer {
                addr: at,
                len: bytes.len() as u32,
                writable: false,
            }],
        );
        at += (bytes.len() as u64).next_multiple_of(0x1000);
    }
    kick.write(1).unwrap();
}

/// The guest offers `count` receive buffers of 2 KiB, from buffer `first` on, and kicks.
fn offer(mem: &GuestMemoryMmap, rx: &mut DriverQueue, kick: &EventFd, first: u64, count: u64) {
    for i in first..first + count {
        rx.add_chain(
            mem,
            &[Buffer {
                addr: RX_DATA + i * 0x800,
                len: 0x800,
                writable: true,
            }],
        );
    }
    kick.write(1).unwrap();
}

/// A guest connected through a front-end thread of ours, its rings set up, with every
/// feature the link offers.
struct Guest {
    link: VhostUserLink,
    mem: GuestMemoryMmap,
    rx: DriverQueue,
    tx: DriverQueue,
    kick_rx: EventFd,
    kick_tx: EventFd,
    call_rx: EventFd,
    /// The front-end thread's next step, and its word that the rings are set up.
    steps: mpsc::Sender<Step>,
    ready: mpsc::Receiver<()>,
    frontend: std::thread::JoinHandle<()>,
}

/// The handshake qemu makes, run until the rings are set up.
fn connect() -> Guest {
    let (file, mem) = guest_memory();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let link = VhostUserLink::connected(OwnedFd::from(ours)).unwrap();
    let rings = Rings {
        kick: [EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
        call: [EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
    };
    let kick_rx = rings.kick[0].try_clone().unwrap();
    let kick_tx = rings.kick[1].try_clone().unwrap();
    let call_rx = rings.call[0].try_clone().unwrap();

    // The guest's rings, before qemu tells the link about them.
    let rx = DriverQueue::new(&mem, GuestAddress(RINGS[0]), SIZE);
    let tx = DriverQueue::new(&mem, GuestAddress(RINGS[1]), SIZE);

    let (ready_tx, ready) = mpsc::channel::<()>();
    let (steps, step_rx) = mpsc::channel::<Step>();
    let memfd = file.as_raw_fd();
    let frontend = std::thread::spawn(move || {
        let mut f = Frontend::from_stream(theirs, 2);
        f.set_owner().unwrap();
        // qemu disables the rings before it sets the features.
        let features = f.get_features().unwrap();
        f.set_vring_enable(0, false).ok();
        f.set_features(features).unwrap();
        let protocol = f.get_protocol_features().unwrap();
        f.set_protocol_features(protocol & VhostUserProtocolFeatures::REPLY_ACK)
            .unwrap();
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: host,
            mmap_offset: 0,
            mmap_handle: memfd,
        };
        f.set_mem_table(&[region]).unwrap();
        setup_rings(&mut f, host, &rings);
        ready_tx.send(()).unwrap();
        while let Ok(step) = step_rx.recv() {
            match step {
                Step::Reset => {
                    f.get_vring_base(0).unwrap();
                    f.get_vring_base(1).unwrap();
                    setup_rings(&mut f, host, &rings);
                    ready_tx.send(()).unwrap();
                }
                Step::Leave => break,
            }
        }
        drop(f);
        drop(file);
    });
    let mut g = Guest {
        link,
        mem,
        rx,
        tx,
        kick_rx,
        kick_tx,
        call_rx,
        steps,
        ready,
        frontend,
    };
    let ready = &g.ready;
    pump(&mut g.link, &mut Vec::new(), |_| ready.try_recv().is_ok());
    g
}

#[test]
fn frames_go_both_ways_wait_for_buffers_and_survive_a_ring_reset() {
    let Guest {
        mut link,
        mem,
        mut rx,
        mut tx,
        kick_rx,
        kick_tx,
        call_rx,
        steps,
        ready,
        frontend,
    } = connect();
    let mut got = Vec::new();

    // Guest to us.
    let sent: Vec<Vec<u8>> = (0..3)
        .map(|n| frame(n, 60 + 100 * usize::from(n)))
        .collect();
    let kick_only = link.stats().kick_only_wakeups;
    transmit(&mem, &mut tx, &kick_tx, &sent);
    pump(&mut link, &mut got, |g| g.len() >= sent.len());
    assert_eq!(got, sent);
    assert!(
        link.stats().kick_only_wakeups > kick_only,
        "the transmit kick served alone"
    );
    assert_eq!(
        tx.take_used(&mem).map(|u| u.0),
        Some(0),
        "transmit chains returned"
    );

    // Us to the guest: two buffers for five frames; three wait.
    offer(&mem, &mut rx, &kick_rx, 0, 2);
    pump(&mut link, &mut got, |_| true);
    let out: Vec<Vec<u8>> = (10..15).map(|n| frame(n, 1000)).collect();
    let mut queue = FrameQueue::new();
    for f in &out {
        queue.push(|b| b.extend_from_slice(f));
    }
    let report = link.write_frames(&queue);
    assert_eq!(report.dropped, 0);
    assert_eq!(call_rx.read().unwrap(), 1, "the guest was interrupted once");
    assert_eq!(received_from(&mem, &mut rx, 0), out[..2].to_vec());
    assert_eq!(link.stats().backlogged, 3);
    // More buffers, a kick: the three that waited arrive, in order.
    offer(&mem, &mut rx, &kick_rx, 2, 3);
    let deadline = Instant::now() + WAIT;
    let mut late = Vec::new();
    while late.len() < 3 {
        pump(&mut link, &mut got, |_| true);
        late.extend(received_from(&mem, &mut rx, 2 + late.len() as u64));
        assert!(Instant::now() < deadline, "the waiting frames never came");
    }
    assert_eq!(late, out[2..].to_vec());

    // The guest resets its device: rings stopped, set up again from scratch.
    DriverQueue::new(&mem, GuestAddress(RINGS[0]), SIZE);
    tx = DriverQueue::new(&mem, GuestAddress(RINGS[1]), SIZE);
    // ... while the guest keeps kicking its transmit queue: the front-end's messages are
    // still answered (the kick alone serves a bounded number of wake-ups in a row).
    steps.send(Step::Reset).unwrap();
    pump(&mut link, &mut got, |_| {
        kick_tx.write(1).unwrap();
        ready.try_recv().is_ok()
    });
    got.clear();
    let again = vec![frame(42, 333)];
    transmit(&mem, &mut tx, &kick_tx, &again);
    pump(&mut link, &mut got, |g| !g.is_empty());
    assert_eq!(got, again);

    // The front-end leaves: a one-off link is done.
    steps.send(Step::Leave).unwrap();
    frontend.join().unwrap();
    let status = pump(&mut link, &mut got, |_| false);
    assert!(matches!(status, ReadStatus::Finished(_)), "{status:?}");
}

/// Frames in used buffers, buffer `first` being the first of them.
fn received_from(mem: &GuestMemoryMmap, rx: &mut DriverQueue, first: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((_, len)) = rx.take_used(mem) {
        let mut bytes = vec![0u8; len as usize];
        let addr = RX_DATA + (first + out.len() as u64) * 0x800;
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        out.push(bytes.split_off(NET_HDR_LEN));
    }
    out
}

/// The frames in used buffers from buffer `first` on, each reassembled from as many buffers as
/// its header says (mergeable receive buffers): its virtio-net header and the frame.
fn received_merged(
    mem: &GuestMemoryMmap,
    rx: &mut DriverQueue,
    first: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut frames = Vec::new();
    let (mut bytes, mut buffers, mut k) = (Vec::new(), 0u16, first);
    while let Some((_, len)) = rx.take_used(mem) {
        let mut part = vec![0u8; len as usize];
        mem.read_slice(&mut part, GuestAddress(RX_DATA + k * 0x800))
            .unwrap();
        k += 1;
        bytes.extend(part);
        buffers += 1;
        if buffers == u16::from_le_bytes([bytes[10], bytes[11]]) {
            let frame = bytes.split_off(NET_HDR_LEN);
            frames.push((std::mem::take(&mut bytes), frame));
            buffers = 0;
        }
    }
    frames
}

/// Frames from `peer` to the guest at `guest`.
fn route(peer: &str, guest: &str) -> Route {
    Route {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src: peer.parse().unwrap(),
        dst: guest.parse().unwrap(),
    }
}

#[test]
fn a_run_of_datagrams_goes_to_the_guest_as_one_frame_its_kernel_cuts_apart() {
    let mut g = connect();
    // Four buffers for each family's run and lone datagram.
    offer(&g.mem, &mut g.rx, &g.kick_rx, 0, 8);
    pump(&mut g.link, &mut Vec::new(), |_| true);
    let payload =
        |i: usize, len: usize| -> Vec<u8> { (0..len).map(|k| (k * 7 + i) as u8).collect() };
    // A run of five (its shorter last ends it), then one alone; datagrams only ever go as a
    // run of one flow and size.
    let sizes = [1000, 1000, 1000, 1000, 600, 1000];
    let mut buffer = 0;
    for (peer, guest) in [
        ("203.0.113.10", "192.0.2.2"),
        ("2001:db8::10", "2001:db8::2"),
    ] {
        let route = route(peer, guest);
        let (mut queue, mut whole) = (FrameQueue::new(), FrameQueue::new());
        queue.set_l4_checksum(L4Checksum::Partial);
        for (i, &len) in sizes.iter().enumerate() {
            udp_frame(&mut queue, route, 443, 5000, &payload(i, len));
            udp_frame(&mut whole, route, 443, 5000, &payload(i, len));
        }
        let before = g.link.stats().clone();
        let report = g.link.write_frames(&queue);
        assert_eq!((report.sent, report.dropped), (6, 0), "{peer}");
        let after = g.link.stats();
        assert_eq!(after.runs_out - before.runs_out, 1, "{peer}");
        assert_eq!(after.run_frames_out - before.run_frames_out, 5, "{peer}");
        let got = received_merged(&g.mem, &mut g.rx, buffer);
        buffer += 4;
        assert_eq!(got.len(), 2, "{peer}: frames in the guest's buffers");
        let (header, run) = &got[0];
        let le = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let header_len = if peer.contains(':') { 62 } else { 42 };
        // NEEDS_CSUM, UDP_L4, the headers' length, the datagram size, the UDP checksum.
        assert_eq!(
            (header[0], header[1], le(2), le(4), le(6), le(8)),
            (1, 5, header_len as u16, 1000, header_len as u16 - 8, 6),
            "{peer}: the run's header"
        );
        let mut cut = cut_segmented(header, run).expect("a run");
        let (lone_header, lone) = &got[1];
        assert_eq!(
            lone_header[1], 0,
            "{peer}: a lone datagram is not segmented"
        );
        let mut lone = lone.clone();
        finish_partial_checksum(&mut lone);
        cut.push(lone);
        let expected: Vec<Vec<u8>> = whole.iter().map(<[u8]>::to_vec).collect();
        assert_eq!(
            cut, expected,
            "{peer}: the datagrams as the guest gets them"
        );
    }

    // One buffer left: the run can't go whole, its first datagram goes alone and the rest
    // wait; with more buffers, what waited leaves as a run again.
    offer(&g.mem, &mut g.rx, &g.kick_rx, buffer, 1);
    pump(&mut g.link, &mut Vec::new(), |_| true);
    let route = route("203.0.113.10", "192.0.2.2");
    let mut queue = FrameQueue::new();
    queue.set_l4_checksum(L4Checksum::Partial);
    for (i, &len) in sizes.iter().enumerate() {
        udp_frame(&mut queue, route, 443, 5000, &payload(i, len));
    }
    let before = g.link.stats().clone();
    assert_eq!(g.link.write_frames(&queue).dropped, 0);
    assert_eq!(
        g.link.stats().runs_out,
        before.runs_out,
        "no room for the run"
    );
    assert_eq!(g.link.stats().backlogged - before.backlogged, 5);
    assert_eq!(received_merged(&g.mem, &mut g.rx, buffer).len(), 1);
    offer(&g.mem, &mut g.rx, &g.kick_rx, buffer + 1, 8);
    // The first datagram, then the run and the lone one.
    let placed = before.frames_out + 3;
    let deadline = Instant::now() + WAIT;
    while g.link.stats().frames_out < placed {
        pump(&mut g.link, &mut Vec::new(), |_| true);
        assert!(
            Instant::now() < deadline,
            "the waiting datagrams never came"
        );
    }
    let late = received_merged(&g.mem, &mut g.rx, buffer + 1);
    assert_eq!(late.len(), 2);
    let after = g.link.stats();
    // Datagrams 1-4 (the shorter fourth ends the run), then the lone one.
    assert_eq!(after.runs_out - before.runs_out, 1);
    assert_eq!(after.run_frames_out - before.run_frames_out, 4);
    assert_eq!(late[0].0[1], 5, "the waiting run's header");
    assert_eq!(
        cut_segmented(&late[0].0, &late[0].1).map(|c| c.len()),
        Some(4)
    );
}

/// A run of datagrams the guest sends as one frame (HOST_USO: a header saying UDP_L4 and the
/// segment size) reaches the engine datagram by datagram, each its own size and bytes, both
/// families; a frame that says it is a run and isn't one is dropped and counted.
#[test]
fn a_run_of_datagrams_from_the_guest_reaches_the_engine_datagram_by_datagram() {
    let mut g = connect();
    let payload =
        |i: usize, len: usize| -> Vec<u8> { (0..len).map(|k| (k * 5 + i) as u8).collect() };
    let sizes = [700, 700, 700, 700, 250];
    for (guest, peer) in [
        ("192.0.2.2", "203.0.113.10"),
        ("2001:db8::2", "2001:db8::10"),
    ] {
        let route = route(guest, peer);
        let mut datagrams = FrameQueue::new();
        for (i, &len) in sizes.iter().enumerate() {
            udp_frame(&mut datagrams, route, 5000, 443, &payload(i, len));
        }
        let frames: Vec<&[u8]> = datagrams.iter().collect();
        let run = gso::run(frames.iter().copied()).expect("a run");
        assert_eq!(run.frames, sizes.len());
        let mut headers = [0u8; gso::MAX_HEADER_LEN];
        let at = gso::run_headers(frames[0], frames[4], &run, &mut headers).unwrap();
        let mut whole = headers[..run.header_len].to_vec();
        for f in &frames {
            whole.extend_from_slice(&f[run.header_len..]);
        }
        // NEEDS_CSUM, UDP_L4, the headers' length, the segment size, where the checksum is.
        let mut header = [0u8; NET_HDR_LEN];
        header[0] = 1;
        header[1] = 5;
        header[2..4].copy_from_slice(&(run.header_len as u16).to_le_bytes());
        header[4..6].copy_from_slice(&700u16.to_le_bytes());
        header[6..8].copy_from_slice(&at.start.to_le_bytes());
        header[8..10].copy_from_slice(&at.offset.to_le_bytes());
        let before = g.link.stats().clone();
        let mut got = Vec::new();
        transmit_headed(&g.mem, &mut g.tx, &g.kick_tx, &[(header, whole)]);
        pump(&mut g.link, &mut got, |got| got.len() >= sizes.len());
        let after = g.link.stats();
        assert_eq!(
            after.tx_udp_runs.runs - before.tx_udp_runs.runs,
            1,
            "{peer}"
        );
        assert_eq!(
            after.tx_udp_runs.datagrams - before.tx_udp_runs.datagrams,
            5
        );
        assert_eq!(got.len(), sizes.len(), "{peer}");
        for (i, frame) in got.iter().enumerate() {
            let mut frame = frame.clone();
            finish_partial_checksum(&mut frame);
            let mut want = frames[i].to_vec();
            if !guest.contains(':') {
                // The IPv4 identification one more each, as the kernel's cutting has it.
                let id = u16::from_be_bytes([want[18], want[19]]).wrapping_add(i as u16);
                want[18..20].copy_from_slice(&id.to_be_bytes());
                want[24..26].fill(0);
                let sum = sans_io::wire::checksum::of(&want[14..34]);
                want[24..26].copy_from_slice(&sum.to_be_bytes());
            }
            assert_eq!(frame, want, "{peer}: datagram {i}");
        }
        g.tx.take_used(&g.mem);
    }
    // Bytes that are no UDP run, under a header that says they are one.
    let mut header = [0u8; NET_HDR_LEN];
    header[1] = 5;
    header[4..6].copy_from_slice(&100u16.to_le_bytes());
    let before = g.link.stats().clone();
    transmit_headed(&g.mem, &mut g.tx, &g.kick_tx, &[(header, frame(9, 300))]);
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while g.link.stats().tx_udp_runs.dropped == before.tx_udp_runs.dropped {
        pump(&mut g.link, &mut got, |_| true);
        assert!(Instant::now() < deadline, "the bogus run was never read");
    }
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(g.link.stats().tx_udp_runs.runs, before.tx_udp_runs.runs);
}
