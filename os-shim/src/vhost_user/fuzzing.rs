//! Fuzz harnesses over our side of vhost-user (the `fuzz/` targets `vhost_user_queue` and
//! `vhost_user_protocol` are one-line wrappers; the tests below run them over fixed inputs
//! and a few thousand pseudo-random ones, so that `cargo test` covers them too).
//!
//! - [`virtqueue`]: a guest writes whatever it likes into its descriptor table and available
//!   ring; we walk every chain it offers, both ways (transmit chains also split into a
//!   copied head and a rest left in place, as the link takes them: the same frames as the
//!   copy), and lend its receive chains as payload memory (reserve, fill, settle with a
//!   short peek, publish some frames and skip others, rewind, a new epoch). Nothing may panic, loop, or read or write outside the guest's
//!   memory (`vm-memory` would have to be wrong for that: the harness checks the outcomes are
//!   consistent with what the guest offered, and every lent area lies inside the memory).
//! - [`protocol`]: any bytes as the front-end's side of the protocol socket, through the real
//!   link (our SET_VRING_ENABLE shim, the `vhost` crate's decoder, our device state); it must
//!   end with the front-end gone, never hang or panic.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use sans_io::wire::lent::LentPayload;
use sans_io::wire::offload::ChecksumAt;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::driver_model::DriverQueue;
use super::lend::RxLend;
use super::tx_split::{read_tx_frame_split, take_tx_frame, TxTail, TX_HEAD};
use super::virtq::{self, ChainError, RxOutcome, RxScratch};
use super::VhostUserLink;
use crate::qemu_socket::ReadStatus;
use crate::vnet_hdr::VnetHeader;

/// The fuzzed guest's memory: rings at 0, buffers anywhere up to here (and, by design of the
/// input, often beyond).
const MEMORY: usize = 64 << 10;

/// See the module documentation.
pub fn virtqueue(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut byte = move || input.next().unwrap_or(0);
    let size = 1u16 << (byte() % 5 + 1);
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]) else {
        return;
    };
    let mut driver = DriverQueue::new(&mem, GuestAddress(0), size);
    let word = |b: &mut dyn FnMut() -> u8| u32::from(b()) << 8 | u32::from(b());
    for index in 0..size {
        // Addresses and lengths up to twice the memory: inside, across its end, outside.
        let addr = u64::from(word(&mut byte)) * 2;
        let len = word(&mut byte) * 2;
        let flags = u16::from(byte() & 0x7);
        let next = u16::from(byte());
        driver.write_desc(&mem, index, addr, len, flags, next);
    }
    let offered = byte() % (size as u8 * 2);
    for _ in 0..offered {
        driver.offer(&mem, u16::from(byte()));
    }
    let frame_len = usize::from(byte()) * 64;
    let frame: Vec<u8> = (0..frame_len).map(|i| i as u8).collect();
    // What the lending phase does, drawn before the phases that don't use the input.
    let header_room = usize::from(byte() % 80);
    let lens: Vec<usize> = (0..byte() % 8)
        .map(|_| usize::from(byte()) * 37 + 1)
        .collect();
    let peeked = usize::from(byte()) * 29;
    let keep = u16::from(byte() % 4);
    let skip_mask = byte();

    // Transmit: every chain offered, each once; frames no larger than the buffer.
    let mut queue = driver.device_queue();
    let mut buf = vec![0u8; MEMORY];
    let mut chains = 0;
    let mut copied = Vec::new();
    while let Some(chain) = queue.pop_descriptor_chain(&mem) {
        chains += 1;
        assert!(chains <= usize::from(offered), "more chains than offered");
        let result = virtq::read_tx_frame(&mem, chain, &mut buf);
        if let Ok(len) = result {
            assert!(len <= buf.len());
        }
        copied.push(result.map(|len| buf[..len].to_vec()));
    }

    // The same chains split into a copied head and a rest in place: the same frames, byte
    // for byte (the rest read back through checked copies), and every area of the rest
    // inside the memory; a frame in too many pieces is the only one the copy takes and the
    // split refuses.
    let mut queue = driver.device_queue();
    let mut tail = TxTail::new();
    let mut head = [0u8; TX_HEAD];
    let mapped = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
    for expected in &copied {
        let chain = queue
            .pop_descriptor_chain(&mem)
            .expect("the same chains again");
        tail.clear();
        // As the link takes it: whole or split, the same frame either way.
        let mut whole_tail = TxTail::new();
        let taken = take_tx_frame(&mem, chain.clone(), &mut buf, &mut whole_tail);
        if let (Ok(frame), Ok(taken)) = (expected, taken) {
            let mut got = buf[..taken.head].to_vec();
            got.resize(taken.len(), 0);
            assert_eq!(
                whole_tail.read(&mem, 0, &mut got[taken.head..]),
                Ok(taken.tail)
            );
            assert_eq!(&got, frame);
        }
        let split = read_tx_frame_split(&mem, chain, &mut head, &mut tail, MEMORY);
        match (expected, split) {
            (Ok(frame), Ok(split)) => {
                assert_eq!(split.len(), frame.len());
                assert_eq!(&head[..split.head], &frame[..split.head]);
                let mut rest = vec![0u8; split.tail];
                assert_eq!(tail.read(&mem, 0, &mut rest), Ok(split.tail));
                assert_eq!(&rest[..], &frame[split.head..]);
                for a in tail.areas() {
                    assert!(a.addr >= mapped && a.addr + a.len <= mapped + MEMORY);
                }
            }
            // The split stops at its 65th piece, before what made the copy fail, if anything.
            (_, Err(ChainError::TooFragmented)) => {}
            (Ok(_), Err(e)) => panic!("the split refused a frame ({e}) the copy took"),
            (Err(a), Err(b)) => assert_eq!(*a, b),
            (Err(e), Ok(_)) => panic!("the copy refused a frame ({e}) the split took"),
        }
    }

    // Receive, on the same offers: frames placed take at least one chain each and never more
    // than were offered; a frame that didn't fit took none.
    let mut queue = driver.device_queue();
    let mut scratch = RxScratch::new(size);
    let mut taken = 0u16;
    for _ in 0..usize::from(offered) + 1 {
        let before = queue.next_avail();
        match virtq::write_rx_frame(&mut queue, &mem, &frame, None, &mut scratch) {
            RxOutcome::Placed(n) => {
                assert!(n >= 1);
                taken += n;
            }
            RxOutcome::NoRoom => {
                assert_eq!(queue.next_avail(), before);
                break;
            }
            RxOutcome::Bad(_) => taken += queue.next_avail().wrapping_sub(before),
        }
        assert!(taken <= u16::from(offered), "more chains used than offered");
    }
    // No chain returned that wasn't taken (one whose head is out of the ring can't be returned
    // at all). What the used ring says now is not checked: the guest may have pointed its
    // buffers at its own rings, and we wrote the frame over them.
    assert!(
        queue.next_used() <= taken,
        "more chains returned than taken"
    );

    lend(
        &std::sync::Arc::new(mem),
        &driver,
        offered,
        header_room,
        &lens,
        peeked,
        keep,
        skip_mask,
    );
}

/// The lending phase of [`virtqueue`], on the same offers.
#[allow(clippy::too_many_arguments)]
fn lend(
    mem: &std::sync::Arc<GuestMemoryMmap>,
    driver: &DriverQueue,
    offered: u8,
    header_room: usize,
    lens: &[usize],
    peeked: usize,
    keep: u16,
    skip_mask: u8,
) {
    let Ok(base) = mem.get_host_address(GuestAddress(0)) else {
        return;
    };
    let (base, end) = (base as usize, base as usize + MEMORY);
    let mut queue = driver.device_queue();
    let mut lend = RxLend::new();
    let mut areas = Vec::new();
    let frames = lend.reserve(&mut queue, mem, keep, header_room, lens, &mut areas);
    assert!(frames <= lens.len());
    assert_eq!(
        areas.iter().map(|a| a.len).sum::<usize>(),
        lens[..frames].iter().sum::<usize>(),
        "the areas are the payloads"
    );
    for a in &areas {
        assert!(
            a.addr >= base && a.addr + a.len <= end,
            "a lent area outside the memory"
        );
    }
    assert!(
        queue.next_avail() <= u16::from(offered),
        "more chains taken than offered"
    );
    let data: Vec<u8> = (0..peeked).map(|i| (i * 7) as u8).collect();
    lend.fill(0, &data);
    let mut left = peeked;
    let filled: Vec<usize> = lens[..frames]
        .iter()
        .map(|&len| {
            let n = left.min(len);
            left -= n;
            n
        })
        .collect();
    let ticket = lend.settle(&filled);
    lend.rewind(&mut queue);
    let headers = vec![0x5a; header_room];
    let at = ChecksumAt {
        start: 14,
        offset: 16,
    };
    for (i, &n) in filled.iter().enumerate().filter(|(_, &n)| n > 0) {
        if skip_mask & (1 << (i % 8)) != 0 {
            continue;
        }
        let lent = LentPayload {
            len: n,
            ticket: ticket + i as u64,
            segment_size: 1000,
        };
        // Longer payloads go as large segments (GUEST_TSO4).
        let header = if n > 1000 {
            VnetHeader::tcp_segments(false, header_room, 1000, at)
        } else {
            VnetHeader::partial_checksum(at)
        };
        let _ = lend.publish(&mut queue, &**mem, &headers, lent, header);
    }
    assert!(
        queue.next_used() <= queue.next_avail(),
        "more chains returned than taken"
    );
    // A new epoch: everything held is forgotten, nothing more is published.
    lend.sync_epoch(1);
    assert_eq!(lend.holds(), 0);
}

/// See the module documentation.
pub fn protocol(data: &[u8]) {
    let Ok((ours, mut theirs)) = UnixStream::pair() else {
        return;
    };
    // Everything the "front-end" says is in the socket before we read; then it hangs up.
    let data = &data[..data.len().min(64 << 10)];
    if theirs.write_all(data).is_err() {
        return;
    }
    let _ = theirs.shutdown(std::net::Shutdown::Write);
    let Ok(mut link) = VhostUserLink::connected(OwnedFd::from(ours)) else {
        return;
    };
    // Each round handles up to a wake-up's worth of messages; a message is at least a
    // 12-byte header, so this many rounds see the end of any input.
    for _ in 0..data.len() / 12 + 2 {
        let status = link
            .read_frames(&mut |frames, _| frames.for_each(drop))
            .unwrap_or(ReadStatus::Finished(None));
        if !matches!(status, ReadStatus::Open) {
            return;
        }
    }
    panic!("the link is still open after the front-end hung up");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so that the test needs no crate of its own.
    fn inputs(count: usize, max_len: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..count).map(move |_| {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let len = (next() as usize) % max_len;
            (0..len).map(|_| next() as u8).collect()
        })
    }

    #[test]
    fn virtqueue_harness_holds_on_random_guests() {
        virtqueue(&[]);
        // Found by the fuzzer: a receive buffer over the rings themselves (the harness read
        // back used lengths the frame had overwritten).
        virtqueue(b"\0\0\0\0\xbe\x42\x08\xc3\xbe\x47\x47\xbe\xbe\x01\x00\x23");
        for input in inputs(2000, 600) {
            virtqueue(&input);
        }
    }

    #[test]
    fn protocol_harness_ends_on_random_front_ends() {
        protocol(&[]);
        // GET_FEATURES, then SET_VRING_ENABLE asking for a reply before any features.
        let mut script = vec![1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        script.extend([18, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        protocol(&script);
        for input in inputs(300, 200) {
            protocol(&input);
        }
    }
}
