use proptest::prelude::*;

use super::*;

/// A message as the kernel hands it over: one datagram, or a run of datagrams of `segment`
/// bytes (the last maybe shorter), each with bytes of its own.
#[derive(Debug, Clone)]
struct Message {
    datagrams: Vec<Vec<u8>>,
    segment: usize,
}

fn message(lens: &[usize], tag: u8) -> Vec<Vec<u8>> {
    lens.iter()
        .enumerate()
        .map(|(i, &len)| {
            (0..len)
                .map(|b| tag.wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ b as u8)
                .collect()
        })
        .collect()
}

fn arb_message(area: usize) -> impl Strategy<Value = Message> {
    let plain = (0..area + 40).prop_map(|len| (vec![len], len));
    // Datagrams as large as the slot or more (dropped by the engine as too large) too.
    let run = (1..area + 10, 2..=64usize, 0..1000usize).prop_map(|(segment, count, last)| {
        let count = count.min(65_000 / segment).max(2);
        let mut lens = vec![segment; count];
        lens[count - 1] = 1 + last % segment;
        (lens, segment)
    });
    (prop_oneof![plain, run], any::<u8>()).prop_map(|((lens, segment), tag)| Message {
        datagrams: message(&lens, tag),
        segment,
    })
}

/// Receives `messages` as `recvmmsg` would into the slots of `region` and their spill
/// buffers; returns each message's (length, datagram size) as [`recv_many`] reads them.
fn receive(
    messages: &[Message],
    region: &mut [u8],
    slot_len: usize,
    offset: usize,
    spill: &mut [u8],
) -> Vec<(usize, usize)> {
    let area = slot_len - offset;
    messages
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let bytes: Vec<u8> = m.datagrams.concat();
            let in_slot = bytes.len().min(area);
            region[j * slot_len + offset..][..in_slot].copy_from_slice(&bytes[..in_slot]);
            spill[j * SPILL..][..bytes.len() - in_slot].copy_from_slice(&bytes[in_slot..]);
            let segment = if m.datagrams.len() > 1 {
                m.segment
            } else {
                bytes.len()
            };
            (bytes.len(), segment)
        })
        .collect()
}

/// The datagrams of filled slots, as the engine reads them.
fn read(region: &[u8], slot_len: usize, offset: usize, lens: &[usize], n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| region[i * slot_len + offset..][..lens[i]].to_vec())
        .collect()
}

proptest! {
    /// Whatever the messages and however few the slots, the datagrams come out one a slot,
    /// in order, each cut to the slot as a receive cuts it: first from the slots the messages
    /// were received into, then, receive by receive, from what waited.
    #[test]
    fn runs_spread_over_slots_and_the_rest_waits_in_order(
        (area, messages, capacity, later) in (2..200usize).prop_flat_map(|area| (
            Just(area),
            prop::collection::vec(arb_message(area), 1..6),
            1..12usize,
            1..12usize,
        )),
    ) {
        let offset = 5;
        let slot_len = offset + area;
        let capacity = capacity.max(messages.len());
        let mut region = vec![0u8; capacity * slot_len];
        let mut spill = vec![0u8; messages.len() * SPILL];
        let received = receive(&messages, &mut region, slot_len, offset, &mut spill);
        let mut lens = vec![usize::MAX; capacity];
        let mut pending = Pending::default();
        let n = spread(&mut region, slot_len, offset, &spill, &received, &mut lens, &mut pending);
        let mut got = read(&region, slot_len, offset, &lens, n);
        prop_assert!(n == capacity || pending.lens.is_empty());
        let mut rounds = 0;
        while !pending.lens.is_empty() {
            rounds += 1;
            prop_assert!(rounds < 1000);
            let mut region = vec![0u8; later * slot_len];
            let mut lens = vec![0; later];
            let n = pending.serve(&mut region, slot_len, offset, &mut lens);
            prop_assert!(n > 0);
            got.extend(read(&region, slot_len, offset, &lens, n));
        }
        let want: Vec<Vec<u8>> = messages
            .iter()
            .flat_map(|m| m.datagrams.iter().map(|d| d[..d.len().min(area)].to_vec()))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(pending.at, 0);
    }
}

/// A run of 5 in slots of room for 3: 3 now, in the slot received into and the two after it,
/// the last 2 at the next receive, and a plain datagram after the run waits behind them.
#[test]
fn a_run_larger_than_the_slots_left_waits_behind_its_start() {
    let (offset, area) = (2, 4);
    let slot_len = offset + area;
    let messages = [
        Message {
            datagrams: message(&[3, 3, 3, 3, 1], 1),
            segment: 3,
        },
        Message {
            datagrams: message(&[2], 2),
            segment: 2,
        },
    ];
    let mut region = vec![0u8; 3 * slot_len];
    let mut spill = vec![0u8; 2 * SPILL];
    let received = receive(&messages, &mut region, slot_len, offset, &mut spill);
    assert_eq!(received, [(13, 3), (2, 2)]);
    let mut lens = [0; 3];
    let mut pending = Pending::default();
    assert_eq!(
        spread(
            &mut region,
            slot_len,
            offset,
            &spill,
            &received,
            &mut lens,
            &mut pending
        ),
        3
    );
    assert_eq!(lens, [3, 3, 3]);
    assert_eq!(
        read(&region, slot_len, offset, &lens, 3),
        messages[0].datagrams[..3]
    );
    assert_eq!(pending.lens, [3, 1, 2]);
    let mut lens = [0; 8];
    let mut later = vec![0u8; 8 * slot_len];
    assert_eq!(pending.serve(&mut later, slot_len, offset, &mut lens), 3);
    let got = read(&later, slot_len, offset, &lens, 3);
    assert_eq!(got[..2], messages[0].datagrams[3..]);
    assert_eq!(got[2], messages[1].datagrams[0]);
}

#[test]
fn datagrams_of_a_message() {
    assert_eq!(datagrams(0, 0), 1);
    assert_eq!(datagrams(10, 10), 1);
    assert_eq!(datagrams(10, 3), 4);
    assert_eq!(datagrams(9, 3), 3);
}
