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
use os_shim::vhost_user::driver_model::{Buffer, DriverQueue};
use os_shim::vhost_user::virtq::NET_HDR_LEN;
use os_shim::vhost_user::VhostUserLink;
use sans_io::wire::external::{ExternalPayloads, GuestFrame};
use sans_io::wire::FrameQueue;
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
    let mut at = TX_DATA;
    for f in frames {
        let mut bytes = vec![0u8; NET_HDR_LEN];
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
        at += 0x1000;
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

#[test]
fn frames_go_both_ways_wait_for_buffers_and_survive_a_ring_reset() {
    let (file, mem) = guest_memory();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut link = VhostUserLink::connected(OwnedFd::from(ours)).unwrap();
    let rings = Rings {
        kick: [EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
        call: [EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
    };
    let kick_rx = rings.kick[0].try_clone().unwrap();
    let kick_tx = rings.kick[1].try_clone().unwrap();
    let call_rx = rings.call[0].try_clone().unwrap();

    // The guest's rings, before qemu tells the link about them.
    let mut rx = DriverQueue::new(&mem, GuestAddress(RINGS[0]), SIZE);
    let mut tx = DriverQueue::new(&mem, GuestAddress(RINGS[1]), SIZE);

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
    let mut got = Vec::new();
    pump(&mut link, &mut got, |_| ready.try_recv().is_ok());

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
