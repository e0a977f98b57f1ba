use super::*;
use crate::vhost_user::driver_model::{Buffer, DriverQueue};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

const MEM: usize = 1 << 20;
const DATA: u64 = 0x10000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn setup(size: u16) -> (GuestMemoryMmap, DriverQueue, Queue) {
    let mem = memory();
    let driver = DriverQueue::new(&mem, GuestAddress(0), size);
    let queue = driver.device_queue();
    (mem, driver, queue)
}

fn readable(addr: u64, len: u32) -> Buffer {
    Buffer {
        addr,
        len,
        writable: false,
    }
}

fn writable(addr: u64, len: u32) -> Buffer {
    Buffer {
        addr,
        len,
        writable: true,
    }
}

fn tx(mem: &GuestMemoryMmap, queue: &mut Queue, buf: &mut [u8]) -> Result<usize, ChainError> {
    let chain = queue.pop_descriptor_chain(mem).expect("a chain");
    read_tx_frame(mem, chain, buf)
}

#[test]
fn a_transmit_frame_is_read_without_its_header_across_descriptors() {
    let (mem, mut driver, mut queue) = setup(16);
    let frame: Vec<u8> = (0..100u8).collect();
    mem.write_slice(&[0xee; NET_HDR_LEN], GuestAddress(DATA))
        .unwrap();
    mem.write_slice(&frame[..30], GuestAddress(DATA + 0x1000))
        .unwrap();
    mem.write_slice(&frame[30..], GuestAddress(DATA + 0x2000))
        .unwrap();
    // The header split over two descriptors too.
    driver.add_chain(
        &mem,
        &[
            readable(DATA, 5),
            readable(DATA + 5, 7),
            readable(DATA + 0x1000, 30),
            readable(DATA + 0x2000, 70),
        ],
    );
    let mut buf = [0u8; 200];
    assert_eq!(tx(&mem, &mut queue, &mut buf), Ok(100));
    assert_eq!(&buf[..100], &frame[..]);
}

#[test]
fn a_transmit_chain_that_ends_in_the_header_is_refused() {
    let (mem, mut driver, mut queue) = setup(16);
    driver.add_chain(&mem, &[readable(DATA, 4), readable(DATA + 4, 7)]);
    let mut buf = [0u8; 200];
    assert_eq!(tx(&mem, &mut queue, &mut buf), Err(ChainError::ShortHeader));
}

#[test]
fn transmit_descriptors_outside_memory_are_refused() {
    let (mem, mut driver, mut queue) = setup(16);
    driver.add_chain(&mem, &[readable(MEM as u64 - 20, 40)]);
    driver.add_chain(&mem, &[readable(u64::MAX - 4, 40)]);
    let mut buf = [0u8; 200];
    assert_eq!(
        tx(&mem, &mut queue, &mut buf),
        Err(ChainError::OutsideMemory)
    );
    assert_eq!(
        tx(&mem, &mut queue, &mut buf),
        Err(ChainError::OutsideMemory)
    );
}

#[test]
fn a_transmit_frame_larger_than_the_buffer_is_refused() {
    let (mem, mut driver, mut queue) = setup(16);
    driver.add_chain(&mem, &[readable(DATA, 12 + 300)]);
    let mut buf = [0u8; 200];
    assert_eq!(
        tx(&mem, &mut queue, &mut buf),
        Err(ChainError::Oversize(200))
    );
}

#[test]
fn a_descriptor_cycle_ends_after_a_queue_of_descriptors() {
    let (mem, mut driver, mut queue) = setup(8);
    // Descriptor 0 says its next is itself.
    driver.write_desc(&mem, 0, DATA, 16, 1, 0);
    driver.offer(&mem, 0);
    let mut buf = vec![0u8; 1 << 16];
    // 8 descriptors of 16 bytes, less a header: the walk stopped.
    assert_eq!(tx(&mem, &mut queue, &mut buf), Ok(8 * 16 - NET_HDR_LEN));
}

/// The bytes the device wrote into chain `buffers`, `len` of them.
fn gather(mem: &GuestMemoryMmap, buffers: &[Buffer], mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for b in buffers {
        let n = len.min(b.len as usize);
        let mut part = vec![0u8; n];
        mem.read_slice(&mut part, GuestAddress(b.addr)).unwrap();
        out.extend(part);
        len -= n;
    }
    out
}

#[test]
fn a_received_frame_fills_chains_of_odd_sizes_and_counts_them() {
    let (mem, mut driver, mut queue) = setup(16);
    let chains = [
        vec![writable(DATA, 7), writable(DATA + 0x100, 10)],
        vec![writable(DATA + 0x1000, 33)],
        vec![writable(DATA + 0x2000, 1000)],
    ];
    let heads: Vec<u16> = chains.iter().map(|c| driver.add_chain(&mem, c)).collect();
    let frame: Vec<u8> = (0..60u8).collect();
    let mut scratch = RxScratch::new(16);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &frame, None, &mut scratch),
        RxOutcome::Placed(3)
    );
    let used: Vec<_> = std::iter::from_fn(|| driver.take_used(&mem)).collect();
    assert_eq!(used, vec![(heads[0], 17), (heads[1], 33), (heads[2], 22)]);
    let mut bytes = Vec::new();
    for (chain, &(_, len)) in chains.iter().zip(&used) {
        bytes.extend(gather(&mem, chain, len as usize));
    }
    let mut header = [0u8; NET_HDR_LEN];
    header[10] = 3;
    assert_eq!(&bytes[..NET_HDR_LEN], &header);
    assert_eq!(&bytes[NET_HDR_LEN..], &frame[..]);
}

#[test]
fn a_frame_left_to_finish_says_where_its_checksum_goes() {
    let (mem, mut driver, mut queue) = setup(16);
    let head = driver.add_chain(&mem, &[writable(DATA, 1000)]);
    let frame: Vec<u8> = (0..80u8).collect();
    let at = sans_io::wire::offload::ChecksumAt {
        start: 34,
        offset: 16,
    };
    let mut scratch = RxScratch::new(16);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &frame, Some(at), &mut scratch),
        RxOutcome::Placed(1)
    );
    let (used_head, len) = driver.take_used(&mem).unwrap();
    assert_eq!(used_head, head);
    let bytes = gather(&mem, &[writable(DATA, 1000)], len as usize);
    // NEEDS_CSUM, csum_start 34 and csum_offset 16 (little-endian), num_buffers 1.
    assert_eq!(
        &bytes[..NET_HDR_LEN],
        &[1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 1, 0]
    );
    assert_eq!(&bytes[NET_HDR_LEN..], &frame[..]);
}

#[test]
fn with_too_few_receive_buffers_nothing_is_taken() {
    let (mem, mut driver, mut queue) = setup(16);
    driver.add_chain(&mem, &[writable(DATA, 40)]);
    let frame = [0x55u8; 100];
    let mut scratch = RxScratch::new(16);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &frame, None, &mut scratch),
        RxOutcome::NoRoom
    );
    assert_eq!(queue.next_avail(), 0);
    assert_eq!(driver.take_used(&mem), None);
    driver.add_chain(&mem, &[writable(DATA + 0x1000, 100)]);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &frame, None, &mut scratch),
        RxOutcome::Placed(2)
    );
}

#[test]
fn unusable_receive_chains_are_returned_empty() {
    let (mem, mut driver, mut queue) = setup(16);
    let mut scratch = RxScratch::new(16);
    driver.add_chain(&mem, &[readable(DATA, 400)]);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &[1; 50], None, &mut scratch),
        RxOutcome::Bad(ChainError::ReadableInRx)
    );
    driver.add_chain(&mem, &[writable(MEM as u64 - 4, 400)]);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &[1; 50], None, &mut scratch),
        RxOutcome::Bad(ChainError::OutsideMemory)
    );
    driver.add_chain(&mem, &[writable(DATA, 0)]);
    assert_eq!(
        write_rx_frame(&mut queue, &mem, &[1; 50], None, &mut scratch),
        RxOutcome::Bad(ChainError::EmptyRx)
    );
    let used: Vec<_> = std::iter::from_fn(|| driver.take_used(&mem)).collect();
    assert_eq!(used, vec![(0, 0), (1, 0), (2, 0)]);
}

#[test]
fn a_transmit_header_asking_for_segmentation_is_told_apart() {
    let (mem, mut driver, mut queue) = setup(16);
    // gso_type TCPV4, TCPV6, TCPV4 with the ECN bit, none, the ECN bit alone; the last chain's
    // header is cut before gso_type.
    let cases: [(u8, u32, bool); 6] = [
        (1, 12, true),
        (4, 12, true),
        (0x81, 12, true),
        (0, 12, false),
        (0x80, 12, false),
        (1, 1, false),
    ];
    for (i, &(gso_type, first_len, _)) in cases.iter().enumerate() {
        let at = DATA + 0x100 * i as u64;
        mem.write_slice(&[0, gso_type], GuestAddress(at)).unwrap();
        driver.add_chain(
            &mem,
            &[
                readable(at, first_len),
                readable(at + u64::from(first_len), 12 - first_len + 40),
            ],
        );
    }
    for &(gso_type, _, segmented) in &cases {
        let chain = queue.pop_descriptor_chain(&mem).expect("a chain");
        let first = chain.clone().next().expect("a descriptor");
        assert_eq!(
            tx_gso(&mem, &first) == vnet_hdr::Gso::Other,
            segmented,
            "gso_type {gso_type:#x}"
        );
    }
}
