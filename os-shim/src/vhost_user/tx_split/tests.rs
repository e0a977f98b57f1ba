use super::*;
use crate::vhost_user::driver_model::{Buffer, DriverQueue};
use crate::vhost_user::virtq::NET_HDR_LEN;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

const MEM: usize = 1 << 20;
const DATA: u64 = 0x10000;

fn setup(mem: GuestMemoryMmap) -> (GuestMemoryMmap, DriverQueue, Queue) {
    let driver = DriverQueue::new(&mem, GuestAddress(0), 16);
    let queue = driver.device_queue();
    (mem, driver, queue)
}

fn one_region() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn readable(addr: u64, len: u32) -> Buffer {
    Buffer {
        addr,
        len,
        writable: false,
    }
}

/// Offers `frame` (behind a header) over descriptors of `sizes` (the header in the first),
/// spaced apart in memory, and splits it with a head of `head_len` bytes.
fn split(
    mem: &GuestMemoryMmap,
    driver: &mut DriverQueue,
    queue: &mut Queue,
    frame: &[u8],
    sizes: &[usize],
    head_len: usize,
    tail: &mut TxTail,
) -> (Result<TxSplit, ChainError>, Vec<u8>) {
    let mut bytes = vec![0xeeu8; NET_HDR_LEN];
    bytes.extend_from_slice(frame);
    let mut buffers = Vec::new();
    let mut at = 0;
    for (k, &size) in sizes.iter().enumerate() {
        let addr = DATA + 0x1000 * k as u64;
        mem.write_slice(&bytes[at..at + size], GuestAddress(addr))
            .unwrap();
        buffers.push(readable(addr, size as u32));
        at += size;
    }
    assert_eq!(at, bytes.len(), "the sizes cover the frame");
    driver.add_chain(mem, &buffers);
    let chain = queue.pop_descriptor_chain(mem).expect("a chain");
    let mut head = vec![0u8; head_len];
    let result = read_tx_frame_split(mem, chain, &mut head, tail, 1 << 16);
    (result, head)
}

/// The rest's bytes, read back through the host addresses (no guest writes meanwhile here).
fn tail_bytes(tail: &TxTail) -> Vec<u8> {
    let mut out = Vec::new();
    for a in tail.areas() {
        // SAFETY: the areas were checked against the test's mapping, alive and unshared.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(a.addr as *const u8, a.len) });
    }
    out
}

#[test]
fn a_frame_splits_at_odd_points_into_a_copied_head_and_a_rest_in_place() {
    let frame: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    for (sizes, head_len) in [
        (vec![NET_HDR_LEN + 1000], 256),
        (vec![5, 7 + 100, 157, 743], 256),
        (vec![NET_HDR_LEN + 3, 254, 1, 742], 257),
        (vec![NET_HDR_LEN, 1000], 1),
    ] {
        let (mem, mut driver, mut queue) = setup(one_region());
        let mut tail = TxTail::new();
        let (result, head) = split(
            &mem,
            &mut driver,
            &mut queue,
            &frame,
            &sizes,
            head_len,
            &mut tail,
        );
        let got = result.unwrap();
        assert_eq!(
            got,
            TxSplit {
                head: head_len,
                tail: 1000 - head_len
            },
            "{sizes:?}"
        );
        assert_eq!(&head[..], &frame[..head_len]);
        assert_eq!(tail.len(), 1000 - head_len);
        assert_eq!(tail_bytes(&tail), &frame[head_len..], "{sizes:?}");
    }
}

#[test]
fn a_short_frame_is_all_head() {
    let (mem, mut driver, mut queue) = setup(one_region());
    let frame: Vec<u8> = (0..60u8).collect();
    let mut tail = TxTail::new();
    let (result, head) = split(
        &mem,
        &mut driver,
        &mut queue,
        &frame,
        &[NET_HDR_LEN + 20, 40],
        TX_HEAD,
        &mut tail,
    );
    assert_eq!(result, Ok(TxSplit { head: 60, tail: 0 }));
    assert_eq!(&head[..60], &frame[..]);
    assert!(tail.is_empty());
}

#[test]
fn a_rest_over_several_descriptors_keeps_one_area_each() {
    let (mem, mut driver, mut queue) = setup(one_region());
    let frame: Vec<u8> = (0..600u32).map(|i| (i ^ 0x5a) as u8).collect();
    let mut tail = TxTail::new();
    let (result, _) = split(
        &mem,
        &mut driver,
        &mut queue,
        &frame,
        &[NET_HDR_LEN + 256, 3, 97, 244],
        TX_HEAD,
        &mut tail,
    );
    assert_eq!(
        result,
        Ok(TxSplit {
            head: 256,
            tail: 344
        })
    );
    let lens: Vec<usize> = tail.areas().iter().map(|a| a.len).collect();
    assert_eq!(lens, vec![3, 97, 244]);
    assert_eq!(tail_bytes(&tail), &frame[256..]);
}

#[test]
fn a_descriptor_across_two_regions_becomes_two_areas() {
    // Two regions, adjacent in guest memory, mapped apart in ours; one descriptor of the
    // frame's rest runs over the boundary at 0x11000.
    const BOUNDARY: u64 = 0x11000;
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), BOUNDARY as usize),
        (GuestAddress(BOUNDARY), 0x10000),
    ])
    .unwrap();
    let (mem, mut driver, mut queue) = setup(mem);
    let frame: Vec<u8> = (0..0x1000u32 + TX_HEAD as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut bytes = vec![0u8; NET_HDR_LEN];
    bytes.extend_from_slice(&frame);
    let first = NET_HDR_LEN + TX_HEAD;
    mem.write_slice(&bytes[..first], GuestAddress(DATA))
        .unwrap();
    let straddle = BOUNDARY - 0x300;
    mem.write_slice(&bytes[first..], GuestAddress(straddle))
        .unwrap();
    driver.add_chain(
        &mem,
        &[readable(DATA, first as u32), readable(straddle, 0x1000)],
    );
    let chain = queue.pop_descriptor_chain(&mem).unwrap();
    let mut head = [0u8; TX_HEAD];
    let mut tail = TxTail::new();
    assert_eq!(
        read_tx_frame_split(&mem, chain, &mut head, &mut tail, 1 << 16),
        Ok(TxSplit {
            head: TX_HEAD,
            tail: 0x1000
        })
    );
    let lens: Vec<usize> = tail.areas().iter().map(|a| a.len).collect();
    assert_eq!(lens, vec![0x300, 0xd00]);
    assert_eq!(tail_bytes(&tail), &frame[TX_HEAD..]);
    let mut back = vec![0u8; 0x1000];
    assert_eq!(tail.read(&mem, 0, &mut back), Ok(back.len()));
    assert_eq!(&back[..], &frame[TX_HEAD..]);
}

#[test]
fn a_rest_outside_the_memory_table_is_refused() {
    let (mem, mut driver, mut queue) = setup(one_region());
    let mut tail = TxTail::new();
    // The head in memory, the rest running past its end.
    driver.add_chain(
        &mem,
        &[readable(DATA, 300), readable(MEM as u64 - 100, 200)],
    );
    let chain = queue.pop_descriptor_chain(&mem).unwrap();
    let mut head = [0u8; TX_HEAD];
    assert_eq!(
        read_tx_frame_split(&mem, chain, &mut head, &mut tail, 1 << 16),
        Err(ChainError::OutsideMemory)
    );
    // And an address that wraps.
    tail.clear();
    driver.add_chain(&mem, &[readable(DATA, 300), readable(u64::MAX - 10, 100)]);
    let chain = queue.pop_descriptor_chain(&mem).unwrap();
    assert_eq!(
        read_tx_frame_split(&mem, chain, &mut head, &mut tail, 1 << 16),
        Err(ChainError::OutsideMemory)
    );
}

#[test]
fn a_frame_larger_than_allowed_is_refused() {
    let (mem, mut driver, mut queue) = setup(one_region());
    let mut tail = TxTail::new();
    driver.add_chain(&mem, &[readable(DATA, NET_HDR_LEN as u32 + 2000)]);
    let chain = queue.pop_descriptor_chain(&mem).unwrap();
    let mut head = [0u8; TX_HEAD];
    assert_eq!(
        read_tx_frame_split(&mem, chain, &mut head, &mut tail, 1500),
        Err(ChainError::Oversize(1500))
    );
}

#[test]
fn the_rest_is_read_back_from_any_offset_through_checked_copies() {
    // What a stash does with the unsent part of a short write.
    let (mem, mut driver, mut queue) = setup(one_region());
    let frame: Vec<u8> = (0..900u32).map(|i| (i * 13) as u8).collect();
    let mut tail = TxTail::new();
    let (result, _) = split(
        &mem,
        &mut driver,
        &mut queue,
        &frame,
        &[NET_HDR_LEN + 300, 7, 1, 592],
        TX_HEAD,
        &mut tail,
    );
    assert_eq!(
        result,
        Ok(TxSplit {
            head: 256,
            tail: 644
        })
    );
    let rest = &frame[256..];
    for at in [0, 1, 43, 44, 45, 51, 52, 300, 643, 644] {
        let mut out = vec![0u8; 700];
        let n = tail.read(&mem, at, &mut out).unwrap();
        assert_eq!(n, rest.len() - at, "at {at}");
        assert_eq!(&out[..n], &rest[at..], "at {at}");
    }
    // Into a buffer shorter than what is left: as much as it holds.
    let mut out = [0u8; 10];
    assert_eq!(tail.read(&mem, 40, &mut out), Ok(10));
    assert_eq!(&out, &rest[40..50]);
}

#[test]
fn a_rest_in_more_pieces_than_kept_is_refused_for_the_copy_to_take() {
    // Big enough a queue for the head's descriptor and one piece more than kept.
    let mem = one_region();
    let mut driver = DriverQueue::new(&mem, GuestAddress(0), 128);
    let mut queue = driver.device_queue();
    let mut buffers = vec![readable(DATA, (NET_HDR_LEN + TX_HEAD) as u32)];
    for k in 0..=MAX_TAIL_AREAS as u64 {
        buffers.push(readable(DATA + 0x1000 + 16 * k, 16));
    }
    driver.add_chain(&mem, &buffers);
    let chain = queue.pop_descriptor_chain(&mem).unwrap();
    let mut head = [0u8; TX_HEAD];
    let mut tail = TxTail::new();
    assert_eq!(
        read_tx_frame_split(&mem, chain, &mut head, &mut tail, 1 << 16),
        Err(ChainError::TooFragmented)
    );
    // Nothing grew past what was allocated up front.
    assert_eq!(tail.areas().len(), MAX_TAIL_AREAS);
}

#[test]
fn only_tcp_leaves_its_rest_in_place_anything_else_is_copied_whole() {
    use sans_io::wire::build::Route;
    use sans_io::wire::tcp::{self as wtcp, Header};
    use sans_io::wire::{FrameQueue, MacAddr};
    let route = Route {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src: "192.0.2.2".parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
    };
    let payload: Vec<u8> = (0..1000u32).map(|i| (i * 3) as u8).collect();
    let mut q = FrameQueue::new();
    let h = Header {
        src_port: 1,
        dst_port: 2,
        seq: 0,
        ack: 0,
        flags: 0x10,
        window: 100,
        mss: None,
        wscale: None,
    };
    wtcp::frame(&mut q, &route, &h, &payload);
    let tcp = q.get(0).unwrap().to_vec();
    let not_tcp: Vec<u8> = (0..1054u32).map(|i| i as u8).collect();
    for (frame, in_place) in [(&tcp, true), (&not_tcp, false)] {
        let (mem, mut driver, mut queue) = setup(one_region());
        let mut tail = TxTail::new();
        let mut bytes = vec![0u8; NET_HDR_LEN];
        bytes.extend_from_slice(frame);
        mem.write_slice(&bytes, GuestAddress(DATA)).unwrap();
        driver.add_chain(
            &mem,
            &[
                readable(DATA, 100),
                readable(DATA + 100, bytes.len() as u32 - 100),
            ],
        );
        let chain = queue.pop_descriptor_chain(&mem).unwrap();
        let mut slot = vec![0u8; 1 << 16];
        let split = take_tx_frame(&mem, chain, &mut slot, &mut tail).unwrap();
        assert_eq!(split.len(), frame.len());
        assert_eq!(split.tail > 0, in_place);
        assert_eq!(tail.is_empty(), !in_place);
        let rests = TxRests {
            mem: &mem,
            tails: std::slice::from_ref(&tail),
        };
        let f = guest_frame(0, &slot[..split.head], &tail);
        let mut whole = f.head.to_vec();
        if let Some(rest) = f.rest {
            let at = whole.len();
            whole.resize(at + rest.len, 0);
            assert_eq!(rests.read(rest, &mut whole[at..]), rest.len);
            // Past its end, nothing.
            assert_eq!(
                rests.read(rest.skip(1).take(rest.len), &mut [0u8; 2000]),
                rest.len - 1
            );
            let beyond = ExternalPayload {
                len: rest.len + 1,
                ..rest
            };
            assert_eq!(rests.read(beyond, &mut [0u8; 2000]), 0);
        }
        assert_eq!(&whole, frame);
    }
}
