//! Guest data coalesced per batch of frames: the same frames handed over as one read
//! (`Batch::frames`, one `send_vectored` per flow's run) and one by one (`Batch::frame`) give
//! the host the same bytes, the guest the same frames, and the engine the same counters —
//! with several flows interleaved and send buffers that fill mid-batch. So do the frames split
//! as a vhost-user link splits them (`Batch::frames_in_place`: a head copied, at odd points,
//! and the TCP payload beyond it left "in place", read through `ExternalPayloads`), stashes of
//! short writes included.

mod common;
mod tcp_mock;

use proptest::prelude::*;
use sans_io::flow::{SockEvent, SockRef};
use sans_io::wire::external::{ExternalPayload, ExternalPayloads, GuestFrame};
use sans_io::wire::parse;
use sans_io::wire::tcp::{self as wtcp, flags, Header};
use tcp_mock::*;

/// What the guest puts in a frame of one flow.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// In-order data of this length.
    Data(usize),
    /// Data this far beyond what the guest sent so far (a segment lost before us).
    Ahead(usize, usize),
    /// The last `n` bytes sent again.
    Again(usize),
    /// A pure ACK.
    Ack,
    /// The guest's FIN.
    Fin,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1usize..3000).prop_map(Step::Data),
        1 => (1usize..3000, 1usize..1500).prop_map(|(gap, len)| Step::Ahead(gap, len)),
        1 => (1usize..2000).prop_map(Step::Again),
        1 => Just(Step::Ack),
        1 => Just(Step::Fin),
    ]
}

/// The byte at sequence number `seq` of every flow: a resent byte is the same byte.
fn byte_at(seq: u32) -> u8 {
    (seq.wrapping_mul(2_654_435_761) >> 24) as u8
}

fn bytes(seq: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| byte_at(seq.wrapping_add(i)))
        .collect()
}

/// Frames as a vhost-user link hands them over: a TCP frame with payload past an odd point
/// (different per frame) split there, its head kept here and its rest "in place" (held apart,
/// read only through `ExternalPayloads`).
struct Kept<'f> {
    heads: Vec<&'f [u8]>,
    rests: Vec<&'f [u8]>,
}

impl<'f> Kept<'f> {
    fn split(frames: &'f [Vec<u8>]) -> Kept<'f> {
        let mut kept = Kept {
            heads: Vec::new(),
            rests: Vec::new(),
        };
        for (i, f) in frames.iter().enumerate() {
            let at = (54 + i * 37 % 301).min(f.len());
            let (head, rest) = if tcp_payload_at(f).is_some_and(|p| p <= at) {
                f.split_at(at)
            } else {
                (&f[..], &f[f.len()..])
            };
            kept.heads.push(head);
            kept.rests.push(rest);
        }
        kept
    }

    fn frames(&self) -> impl Iterator<Item = GuestFrame<'f>> + '_ {
        self.heads
            .iter()
            .zip(&self.rests)
            .enumerate()
            .map(|(i, (&head, rest))| GuestFrame {
                head,
                rest: (!rest.is_empty()).then_some(ExternalPayload {
                    frame: i as u32,
                    at: 0,
                    len: rest.len(),
                }),
            })
    }
}

impl ExternalPayloads for Kept<'_> {
    fn read(&self, p: ExternalPayload, dst: &mut [u8]) -> usize {
        let rest = self.rests[p.frame as usize];
        let n = p.len.min(dst.len());
        dst[..n].copy_from_slice(&rest[p.at..p.at + n]);
        n
    }
}

/// Where the TCP payload of an IPv4 frame starts.
fn tcp_payload_at(frame: &[u8]) -> Option<usize> {
    let eth = parse::ethernet(frame).ok()?;
    let ip = parse::ipv4(eth.payload).ok()?;
    let tcp = wtcp::parse(ip.payload).ok()?;
    Some(frame.len() - tcp.payload.len() - (eth.payload.len() - ip.header.len() - ip.payload.len()))
}

/// Engines driven the two ways, and each flow's guest end and socket.
struct Pair {
    batched: H,
    single: H,
    /// Given the frames split, their TCP payload past an odd point left "in place".
    in_place: H,
    guests: Vec<Guest>,
    socks: Vec<SockRef>,
    /// Where each guest's data starts (for resends).
    first_seq: Vec<u32>,
    fin_sent: Vec<bool>,
}

impl Pair {
    fn new(flows: usize) -> Pair {
        let (mut batched, mut single, mut in_place) = (H::new(), H::new(), H::new());
        let (mut guests, mut socks) = (Vec::new(), Vec::new());
        for i in 0..flows {
            let me = format!("192.0.2.2:{}", 40000 + i);
            let g0 = Guest::new(&me, "203.0.113.5:80");
            let mut ends = [g0, g0, g0];
            for (h, g) in [&mut batched, &mut single, &mut in_place]
                .into_iter()
                .zip(&mut ends)
            {
                g.syn(h, 1460, Some(7));
                let s = h.last_sock();
                h.event(s, SockEvent::Connected);
                g.receive(&h.take());
                g.ack_all(h);
                assert!(h.take().is_empty());
            }
            assert_eq!((ends[0].seq, ends[0].ack), (ends[1].seq, ends[1].ack));
            let g = ends[0];
            socks.push(batched.last_sock());
            guests.push(g);
        }
        assert_eq!(
            batched.io.socks.keys().collect::<Vec<_>>(),
            single.io.socks.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            batched.io.socks.keys().collect::<Vec<_>>(),
            in_place.io.socks.keys().collect::<Vec<_>>()
        );
        let first_seq = guests.iter().map(|g| g.seq).collect();
        Pair {
            batched,
            single,
            in_place,
            guests,
            socks,
            first_seq,
            fin_sent: vec![false; flows],
        }
    }

    /// The frame for `step` of flow `i`, advancing its guest.
    fn frame(&mut self, i: usize, step: Step) -> Vec<u8> {
        let g = &mut self.guests[i];
        let (seq, len, fl) = match step {
            Step::Data(len) => (g.seq, len, flags::ACK | flags::PSH),
            Step::Ahead(gap, len) => (g.seq.wrapping_add(gap as u32), len, flags::ACK),
            Step::Again(n) => {
                let sent = g.seq.wrapping_sub(self.first_seq[i]) as usize;
                let n = n.min(sent);
                (g.seq.wrapping_sub(n as u32), n, flags::ACK)
            }
            Step::Ack => (g.seq, 0, flags::ACK),
            Step::Fin if self.fin_sent[i] => (g.seq.wrapping_sub(1), 0, flags::ACK | flags::FIN),
            Step::Fin => (g.seq, 0, flags::ACK | flags::FIN),
        };
        let h = Header {
            seq,
            ..g.header(fl)
        };
        let payload = bytes(seq, len);
        let frame = self.batched.tcp_frame(g.me, g.peer, h, &payload);
        match step {
            Step::Data(len) => g.seq = g.seq.wrapping_add(len as u32),
            Step::Fin if !self.fin_sent[i] => {
                g.seq = g.seq.wrapping_add(1);
                self.fin_sent[i] = true;
            }
            _ => {}
        }
        frame
    }

    /// The same frames into both engines, in one batch each.
    fn feed(&mut self, frames: &[Vec<u8>]) {
        let b = &mut self.batched;
        let mut batch = b.engine.batch(b.now, &mut b.io, &mut b.out);
        batch.frames(frames.iter().map(Vec::as_slice));
        batch.finish();
        let s = &mut self.single;
        let mut batch = s.engine.batch(s.now, &mut s.io, &mut s.out);
        for f in frames {
            batch.frame(f);
        }
        batch.finish();
        let kept = Kept::split(frames);
        let h = &mut self.in_place;
        let mut batch = h.engine.batch(h.now, &mut h.io, &mut h.out);
        batch.frames_in_place(kept.frames(), &kept);
        batch.finish();
    }

    /// Room for `space` bytes in socket `s`'s send buffer, in every engine's mock.
    fn set_space(&mut self, s: SockRef, space: u32) {
        for h in [&mut self.batched, &mut self.single, &mut self.in_place] {
            h.io.sock(s).space = space;
        }
    }

    /// Room made in every socket (the host peer read), and `Writable` for each.
    fn room(&mut self, room: &[u32]) {
        for h in [&mut self.batched, &mut self.single, &mut self.in_place] {
            for (&s, &r) in self.socks.iter().zip(room) {
                h.io.sock(s).space += r;
            }
            let mut batch = h.engine.batch(h.now, &mut h.io, &mut h.out);
            for &s in &self.socks {
                batch.socket(s, SockEvent::Writable);
            }
            batch.finish();
        }
    }

    /// Both the same so far; the guests resume from what the engine acknowledged, as a
    /// guest resends what was dropped.
    fn compare(&mut self) -> Result<(), TestCaseError> {
        let (b, s) = (self.batched.take(), self.single.take());
        let in_place = self.in_place.take();
        prop_assert_eq!(&b, &in_place, "frames from the split frames");
        for (i, g) in self.guests.iter_mut().enumerate() {
            let to = |segs: &[Seg]| -> Vec<Seg> {
                segs.iter().filter(|x| x.dst == g.me).cloned().collect()
            };
            let (fb, fs) = (to(&b), to(&s));
            prop_assert_eq!(&fb, &fs, "frames to flow {}", i);
            if let Some(last) = fb.last().filter(|x| x.has(flags::ACK)) {
                if !self.fin_sent[i] {
                    g.seq = last.ack;
                }
            }
        }
        prop_assert_eq!(b.len(), s.len());
        for (k, sb) in &self.batched.io.socks {
            let si = &self.in_place.io.socks[k];
            prop_assert_eq!(&sb.written, &si.written, "bytes to socket {} (split)", k);
            prop_assert_eq!(sb.space, si.space);
            prop_assert_eq!(sb.shut, si.shut);
            prop_assert_eq!(sb.closed, si.closed);
            let ss = &self.single.io.socks[k];
            prop_assert_eq!(&sb.written, &ss.written, "bytes to socket {}", k);
            prop_assert_eq!(sb.space, ss.space);
            prop_assert_eq!(sb.shut, ss.shut);
            prop_assert_eq!(sb.closed, ss.closed);
            prop_assert_eq!(sb.interest, ss.interest);
        }
        prop_assert_eq!(
            self.batched.engine.counters(),
            self.single.engine.counters()
        );
        prop_assert_eq!(
            self.batched.engine.counters(),
            self.in_place.engine.counters()
        );
        self.batched.check();
        self.single.check();
        self.in_place.check();
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn a_batch_of_frames_does_what_the_frames_one_by_one_do(
        flows in 1usize..4,
        space in prop::collection::vec(0u32..12_000, 3),
        rounds in prop::collection::vec(
            (
                prop::collection::vec((0usize..3, step()), 1..40),
                prop::collection::vec(0u32..8_000, 3),
            ),
            1..5,
        ),
    ) {
        let mut p = Pair::new(flows);
        for (i, &s) in p.socks.clone().iter().enumerate() {
            p.set_space(s, space[i]);
        }
        for (steps, room) in rounds {
            let frames: Vec<Vec<u8>> = steps
                .iter()
                .map(|&(i, st)| (i % flows, st))
                .map(|(i, st)| p.frame(i, st))
                .collect();
            p.feed(&frames);
            p.compare()?;
            p.room(&room);
            p.compare()?;
        }
    }
}

#[test]
fn consecutive_segments_of_a_flow_go_out_in_one_call() {
    let mut p = Pair::new(2);
    let frames: Vec<Vec<u8>> = [0, 0, 1, 0, 1, 1, 0]
        .iter()
        .map(|&i| p.frame(i, Step::Data(1000)))
        .collect();
    p.feed(&frames);
    p.compare().unwrap();
    for &s in &p.socks {
        let (b, one) = (&p.batched.io.socks[&s.0], &p.single.io.socks[&s.0]);
        assert_eq!(b.written.len(), if s == p.socks[0] { 4000 } else { 3000 });
        assert_eq!((b.sends, b.vectored), (1, 1), "one call for the flow's run");
        assert_eq!(one.sends, b.written.len() / 1000, "one send per segment");
    }
}

#[test]
fn a_run_cut_short_stashes_the_rest_and_drops_what_follows() {
    let mut p = Pair::new(1);
    let s = p.socks[0];
    p.set_space(s, 2500);
    let frames: Vec<Vec<u8>> = (0..5).map(|_| p.frame(0, Step::Data(1000))).collect();
    assert!(
        Kept::split(&frames).rests.iter().all(|r| r.len() >= 700),
        "every payload mostly in place"
    );
    p.feed(&frames);
    p.compare().unwrap();
    let c = p.batched.engine.counters().tcp.clone();
    assert_eq!(c.stash_uses, 1, "the third segment's rest");
    assert_eq!(c.no_room_drops, 1, "the fourth, for want of room");
    assert_eq!(c.out_of_order, 1, "the fifth, beyond the dropped fourth");
    assert_eq!(p.batched.io.socks[&s.0].written.len(), 2500);
    assert_eq!(
        p.in_place.engine.counters().tcp.stash_uses,
        1,
        "the rest stashed from the payload left in place too"
    );
}
