use std::collections::HashMap;

use super::*;
use crate::vhost_user::driver_model::{Buffer, DriverQueue};
use sans_io::wire::offload::ChecksumAt;
use virtio_queue::Queue;

const MEM: usize = 4 << 20;
const DATA: u64 = 0x100000;
/// Ethernet + IPv4 + TCP, as the engine asks.
const HEADERS: usize = 54;

/// The guest's side: its memory, its driver queue and what each chain it offered is made of.
struct Guest {
    mem: Arc<GuestMemoryMmap>,
    driver: DriverQueue,
    queue: Queue,
    chains: HashMap<u16, Vec<Buffer>>,
    next_addr: u64,
}

impl Guest {
    fn new(size: u16) -> Guest {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
        let driver = DriverQueue::new(&*mem, GuestAddress(0), size);
        let queue = driver.device_queue();
        Guest {
            mem,
            driver,
            queue,
            chains: HashMap::new(),
            next_addr: DATA,
        }
    }

    /// Offers one chain of writable buffers of `lens` bytes each.
    fn offer(&mut self, lens: &[u32]) -> u16 {
        let buffers: Vec<Buffer> = lens
            .iter()
            .map(|&len| {
                let addr = self.next_addr;
                // A gap after each, so that a write past a buffer's end would show.
                self.next_addr += u64::from(len) + 64;
                Buffer {
                    addr,
                    len,
                    writable: true,
                }
            })
            .collect();
        let head = self.driver.add_chain(&*self.mem, &buffers);
        self.chains.insert(head, buffers);
        head
    }

    /// Offers single-buffer chains of these sizes.
    fn offer_each(&mut self, sizes: &[u32]) {
        for &size in sizes {
            self.offer(&[size]);
        }
    }

    /// The frames the device used, each reassembled from its buffers as a guest with
    /// mergeable buffers does: the virtio-net header and the frame.
    fn received(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut used = Vec::new();
        while let Some(u) = self.driver.take_used(&*self.mem) {
            used.push(u);
        }
        let mut frames = Vec::new();
        let mut i = 0;
        while i < used.len() {
            let first = self.bytes_of(used[i]);
            if first.len() < NET_HDR_LEN {
                // An empty buffer given back: the guest drops it.
                i += 1;
                continue;
            }
            let count = u16::from_le_bytes([first[10], first[11]]) as usize;
            let mut bytes = first;
            for &u in &used[i + 1..i + count] {
                bytes.extend(self.bytes_of(u));
            }
            i += count;
            frames.push((bytes[..NET_HDR_LEN].to_vec(), bytes[NET_HDR_LEN..].to_vec()));
        }
        frames
    }

    fn bytes_of(&self, (head, len): (u16, u32)) -> Vec<u8> {
        let mut out = Vec::new();
        let mut left = len as usize;
        for b in &self.chains[&head] {
            let n = left.min(b.len as usize);
            let mut buf = vec![0; n];
            self.mem.read_slice(&mut buf, GuestAddress(b.addr)).unwrap();
            out.extend(buf);
            left -= n;
        }
        out
    }
}

/// Recognisable headers and payload.
fn headers(tag: u8) -> Vec<u8> {
    (0..HEADERS as u8).map(|i| i ^ tag).collect()
}

fn payload(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ tag).collect()
}

/// Reserves frames of `lens`, fills what `filled` says with `payload(_, i)` through the areas
/// themselves (as the kernel would), settles: the tickets, in order.
fn lend_and_fill(
    g: &mut Guest,
    lend: &mut RxLend,
    lens: &[usize],
    filled: &[usize],
) -> (usize, u64) {
    let mut areas = Vec::new();
    let frames = lend.reserve(&mut g.queue, &g.mem, 0, HEADERS, lens, &mut areas);
    assert!(areas.len() <= MAX_LENT_AREAS);
    let total: usize = areas.iter().map(|a| a.len).sum();
    assert_eq!(
        total,
        lens[..frames].iter().sum::<usize>(),
        "the areas cover the payloads"
    );
    assert!(
        loans::are_lent(&areas),
        "the areas are on loan until settled"
    );
    let mut at = 0;
    for (i, &n) in filled[..frames].iter().enumerate() {
        lend.fill(at, &payload(n, i as u8));
        at += lens[i];
    }
    let ticket = lend.settle(&filled[..frames]);
    assert!(!loans::are_lent(&areas), "settling ends the loan");
    (frames, ticket)
}

fn publish(
    g: &mut Guest,
    lend: &mut RxLend,
    tag: u8,
    len: usize,
    ticket: u64,
) -> Result<u16, PublishError> {
    let at = ChecksumAt {
        start: 34,
        offset: 16,
    };
    lend.publish(
        &mut g.queue,
        &*g.mem,
        &headers(tag),
        LentPayload {
            len,
            ticket,
            segment_size: 0,
        },
        VnetHeader::partial_checksum(at),
    )
}

#[test]
fn payloads_over_buffers_of_odd_sizes_reach_the_guest_whole_and_in_order() {
    let mut g = Guest::new(64);
    g.offer_each(&[97, 1500, 333, 4096, 2049, 1, 700, 1500, 1500, 1500]);
    // A chain of several descriptors too.
    g.offer(&[50, 3, 1000, 4000]);
    let mut lend = RxLend::new();
    let lens = [1460, 3000, 2500];
    let (frames, ticket) = lend_and_fill(&mut g, &mut lend, &lens, &lens);
    assert_eq!(frames, 3);
    for (i, &len) in lens.iter().enumerate() {
        publish(&mut g, &mut lend, i as u8, len, ticket + i as u64).unwrap();
    }
    let got = g.received();
    assert_eq!(got.len(), 3);
    for (i, (vnet, frame)) in got.iter().enumerate() {
        assert_eq!(vnet[0], 1, "NEEDS_CSUM");
        assert_eq!(u16::from_le_bytes([vnet[6], vnet[7]]), 34);
        assert_eq!(&frame[..HEADERS], &headers(i as u8)[..]);
        assert_eq!(
            &frame[HEADERS..],
            &payload(lens[i], i as u8)[..],
            "frame {i}"
        );
    }
    assert_eq!(lend.stats.frames, 3);
    assert_eq!(lend.stats.bytes, 1460 + 3000 + 2500);
}

#[test]
fn headers_longer_than_the_first_chains_continue_in_the_next() {
    let mut g = Guest::new(16);
    // The virtio-net header ends in the second chain, the headers in the fourth.
    g.offer_each(&[13, 10, 20, 40, 5000]);
    let mut lend = RxLend::new();
    let (frames, ticket) = lend_and_fill(&mut g, &mut lend, &[1000], &[1000]);
    assert_eq!(frames, 1);
    assert_eq!(publish(&mut g, &mut lend, 9, 1000, ticket), Ok(5));
    let got = g.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, [headers(9), payload(1000, 0)].concat());
}

#[test]
fn a_short_peek_holds_the_chains_it_left_for_the_next_frame() {
    let mut g = Guest::new(32);
    g.offer_each(&[1000; 8]);
    let mut lend = RxLend::new();
    // Three frames of 1500 reserved (two chains each), 1800 bytes peeked: the first frame
    // full, the second with 300 bytes in one chain; three chains left over.
    let (frames, ticket) = lend_and_fill(&mut g, &mut lend, &[1500, 1500, 1500], &[1500, 300, 0]);
    assert_eq!(frames, 3);
    assert_eq!(lend.holds(), 3 + 3);
    // The next reservation takes the held chains before the ring's.
    let (frames, next) = lend_and_fill(&mut g, &mut lend, &[1500, 1500], &[1500, 1500]);
    assert_eq!((frames, next), (2, ticket + 2));
    publish(&mut g, &mut lend, 0, 1500, ticket).unwrap();
    publish(&mut g, &mut lend, 1, 300, ticket + 1).unwrap();
    publish(&mut g, &mut lend, 2, 1500, next).unwrap();
    publish(&mut g, &mut lend, 3, 1500, next + 1).unwrap();
    let got = g.received();
    let lens: Vec<usize> = got.iter().map(|(_, f)| f.len() - HEADERS).collect();
    assert_eq!(lens, [1500, 300, 1500, 1500]);
    assert_eq!(got[1].1[HEADERS..], payload(300, 1)[..]);
    assert_eq!(lend.holds(), 0, "eight chains, seven used, none left");
}

#[test]
fn held_chains_go_back_to_the_ring_when_they_were_the_last_taken() {
    let mut g = Guest::new(16);
    g.offer_each(&[2000; 4]);
    let mut lend = RxLend::new();
    let (_, ticket) = lend_and_fill(&mut g, &mut lend, &[1000, 1000, 1000], &[1000, 0, 0]);
    assert_eq!(lend.holds(), 1 + 2);
    assert!(lend.rewind(&mut g.queue));
    assert_eq!(lend.holds(), 1);
    assert_eq!(g.queue.next_avail(), 1, "two chains back on the ring");
    publish(&mut g, &mut lend, 0, 1000, ticket).unwrap();
    assert_eq!(g.received().len(), 1);
    // Nothing held: nothing to rewind.
    assert!(!lend.rewind(&mut g.queue));
}

#[test]
fn a_new_epoch_forgets_every_chain_and_their_frames_are_not_published() {
    let mut g = Guest::new(16);
    g.offer_each(&[2000; 4]);
    let mut lend = RxLend::new();
    lend.sync_epoch(1);
    let (_, ticket) = lend_and_fill(&mut g, &mut lend, &[1000, 1000], &[1000, 500]);
    assert_eq!(lend.holds(), 2);
    // The memory table changed (or the rings): what was taken is gone.
    lend.sync_epoch(2);
    assert_eq!(lend.holds(), 0);
    assert_eq!(
        publish(&mut g, &mut lend, 0, 1000, ticket),
        Err(PublishError::Gone)
    );
    assert!(g.received().is_empty());
}

#[test]
fn a_full_ring_lends_nothing_and_a_low_one_what_it_can() {
    let mut g = Guest::new(32);
    let mut lend = RxLend::new();
    let mut areas = Vec::new();
    assert_eq!(
        lend.reserve(&mut g.queue, &g.mem, 0, HEADERS, &[1000], &mut areas),
        0
    );
    assert!(areas.is_empty());
    assert_eq!(
        lend.stats.no_room, 1,
        "a reservation that got nothing is counted"
    );
    // Four chains, two to be left on the ring: room for one frame of two chains.
    g.offer_each(&[600; 4]);
    let frames = lend.reserve(&mut g.queue, &g.mem, 2, HEADERS, &[1000, 1000], &mut areas);
    assert_eq!(frames, 1);
    assert_eq!(areas.iter().map(|a| a.len).sum::<usize>(), 1000);
    lend.settle(&[1000]);
    assert_eq!(g.queue.next_avail(), 2, "two chains stay on the ring");
    assert_eq!(lend.stats.no_room, 1, "one that got a frame is not");
    // Only the two kept chains are left: nothing more is lent.
    areas.clear();
    assert_eq!(
        lend.reserve(&mut g.queue, &g.mem, 2, HEADERS, &[100], &mut areas),
        0
    );
    assert_eq!(lend.stats.no_room, 2);
}

#[test]
fn unusable_chains_are_given_back_empty_and_counted() {
    let mut g = Guest::new(16);
    let head = g.driver.add_chain(
        &*g.mem,
        &[Buffer {
            addr: DATA,
            len: 2000,
            writable: false,
        }],
    );
    // Outside the guest's memory.
    g.driver.add_chain(
        &*g.mem,
        &[Buffer {
            addr: MEM as u64 - 100,
            len: 2000,
            writable: true,
        }],
    );
    g.offer_each(&[3000]);
    let mut lend = RxLend::new();
    let (frames, _) = lend_and_fill(&mut g, &mut lend, &[1000], &[1000]);
    assert_eq!(frames, 1);
    assert_eq!(lend.stats.bad_chains, 2);
    assert!(lend.returned);
    assert_eq!(g.driver.take_used(&*g.mem), Some((head, 0)));
}

#[test]
fn frames_whose_queue_was_dropped_give_their_chains_back_empty() {
    let mut g = Guest::new(16);
    g.offer_each(&[2000; 3]);
    let mut lend = RxLend::new();
    let (_, ticket) = lend_and_fill(&mut g, &mut lend, &[1000, 1000, 1000], &[1000, 1000, 1000]);
    // The first two never published: the third's publication returns them first.
    publish(&mut g, &mut lend, 2, 1000, ticket + 2).unwrap();
    let mut used = Vec::new();
    while let Some(u) = g.driver.take_used(&*g.mem) {
        used.push(u.1);
    }
    assert_eq!(used, [0, 0, (NET_HDR_LEN + HEADERS + 1000) as u32]);
    // And a ticket already gone can't be published.
    assert_eq!(
        publish(&mut g, &mut lend, 0, 1000, ticket),
        Err(PublishError::Gone)
    );
}

#[test]
fn headers_that_dont_fit_the_reserved_room_are_refused() {
    let mut g = Guest::new(16);
    g.offer_each(&[2000]);
    let mut lend = RxLend::new();
    let (_, ticket) = lend_and_fill(&mut g, &mut lend, &[1000], &[1000]);
    let result = lend.publish(
        &mut g.queue,
        &*g.mem,
        &headers(0)[..HEADERS - 1],
        LentPayload {
            len: 1000,
            ticket,
            segment_size: 0,
        },
        VnetHeader::default(),
    );
    assert_eq!(result, Err(PublishError::Mismatch));
}

#[test]
fn chains_taken_with_another_memory_table_are_forgotten() {
    let mut g = Guest::new(16);
    g.offer_each(&[2000; 4]);
    let mut lend = RxLend::new();
    lend_and_fill(&mut g, &mut lend, &[1000, 1000], &[1000, 0]);
    assert_eq!(lend.holds(), 2, "one committed, one held");
    // The same guest memory, through a table of its own: the held chain's host address
    // belongs to the other one.
    let other = Arc::new(GuestMemoryMmap::clone(&g.mem));
    let mut areas = Vec::new();
    let frames = lend.reserve(&mut g.queue, &other, 0, HEADERS, &[100], &mut areas);
    assert_eq!(frames, 1);
    assert_eq!(lend.holds(), 0, "nothing from before is held or committed");
    lend.settle(&[100]);
    assert_eq!(lend.holds(), 1);
}

/// Ethernet, IP and TCP headers as the engine writes a lent frame's, for `payload` bytes.
fn tcp_headers(ipv6: bool, payload: usize) -> Vec<u8> {
    use sans_io::wire::build::Route;
    use sans_io::wire::tcp::{flags, write_headers_partial, Header};
    use sans_io::wire::MacAddr;
    let (src, dst) = if ipv6 {
        ("2001:db8::1", "2001:db8::2")
    } else {
        ("192.0.2.1", "192.0.2.2")
    };
    let route = Route {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    };
    let h = Header {
        src_port: 80,
        dst_port: 40000,
        seq: 1,
        ack: 1,
        flags: flags::ACK | flags::PSH,
        window: 1000,
        mss: None,
        wscale: None,
    };
    let mut buf = vec![0; 128];
    let n = write_headers_partial(&mut buf, &route, &h, payload);
    buf.truncate(n);
    buf
}

/// `virtio_net_hdr` as little-endian fields: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset.
fn fields(h: &VnetHeader) -> (u8, u8, u16, u16, u16, u16) {
    let b = h.bytes_le();
    let le = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    (b[0], b[1], le(2), le(4), le(6), le(8))
}

#[test]
fn a_lent_frame_longer_than_its_segment_goes_as_a_large_segment_to_a_guest_that_takes_it() {
    let all = GuestOffloads {
        csum: true,
        tso4: true,
        tso6: true,
        uso4: true,
        uso6: true,
    };
    let lent = |len, segment_size| LentPayload {
        len,
        ticket: 0,
        segment_size,
    };
    let v4 = tcp_headers(false, 5000);
    let v6 = tcp_headers(true, 5000);
    let header = |h: &[u8], l, g| lent_header(h, &l, g).map(|h| fields(&h));
    // Longer than a segment: TCPV4 / TCPV6, the headers' length, the segment size, and the
    // checksum left at the TCP checksum.
    assert_eq!(
        header(&v4, lent(5000, 1460), all),
        Some((1, 1, 54, 1460, 34, 16))
    );
    assert_eq!(
        header(&v6, lent(5000, 1440), all),
        Some((1, 4, 74, 1440, 54, 16))
    );
    // One segment, or no segment size: the checksum only.
    assert_eq!(
        header(&v4, lent(1460, 1460), all),
        Some((1, 0, 0, 0, 34, 16))
    );
    assert_eq!(header(&v4, lent(5000, 0), all), Some((1, 0, 0, 0, 34, 16)));
    // A guest that takes no large segments of the family, or no unfinished checksums: the
    // frame can't go (its payload is never read back).
    let no_tso4 = GuestOffloads { tso4: false, ..all };
    assert_eq!(header(&v4, lent(5000, 1460), no_tso4), None);
    assert!(header(&v6, lent(5000, 1440), no_tso4).is_some());
    assert!(header(&v4, lent(1000, 1460), no_tso4).is_some());
    let no_csum = GuestOffloads { csum: false, ..all };
    assert_eq!(header(&v4, lent(1000, 1460), no_csum), None);

    // Published over buffers of odd sizes: one frame, its header saying so, counted.
    let mut g = Guest::new(64);
    g.offer_each(&[97, 1500, 333, 4096, 2049, 1, 700, 1500]);
    let mut lend = RxLend::new();
    let (frames, ticket) = lend_and_fill(&mut g, &mut lend, &[5000], &[5000]);
    assert_eq!(frames, 1);
    let lent = LentPayload {
        len: 5000,
        ticket,
        segment_size: 1460,
    };
    let vnet = lent_header(&v4, &lent, all).unwrap();
    lend.publish(&mut g.queue, &*g.mem, &v4, lent, vnet)
        .unwrap();
    assert_eq!(lend.stats.large_segments, 1);
    let received = g.received();
    assert_eq!(received.len(), 1);
    let (vnet_bytes, frame) = &received[0];
    assert_eq!(&vnet_bytes[..10], &vnet.bytes_le());
    assert_eq!(&frame[..54], &v4[..]);
    assert_eq!(&frame[54..], &payload(5000, 0)[..]);
}

#[test]
fn a_run_goes_as_one_frame_only_to_a_guest_that_takes_its_kind() {
    use sans_io::wire::gso::{Run, Transport};
    let run = |transport, ipv6| Run {
        transport,
        ipv6,
        frames: 2,
        header_len: 42,
        segment_size: 1000,
        payload_len: 1500,
    };
    let only = |f: fn(&mut GuestOffloads)| {
        let mut g = GuestOffloads {
            csum: true,
            ..GuestOffloads::default()
        };
        f(&mut g);
        g
    };
    let cases: [(GuestOffloads, [bool; 4]); 4] = [
        (only(|g| g.tso4 = true), [true, false, false, false]),
        (only(|g| g.tso6 = true), [false, true, false, false]),
        (only(|g| g.uso4 = true), [false, false, true, false]),
        (only(|g| g.uso6 = true), [false, false, false, true]),
    ];
    for (guest, expected) in cases {
        let got = [
            guest.takes(&run(Transport::Tcp, false)),
            guest.takes(&run(Transport::Tcp, true)),
            guest.takes(&run(Transport::Udp, false)),
            guest.takes(&run(Transport::Udp, true)),
        ];
        assert_eq!(got, expected, "{guest:?}");
    }
}
