//! Short echo connections over a lossy link, the case where the C original lost FINs and
//! duplicated bytes: every byte arrives exactly once, every FIN is delivered, the socket is
//! closed gracefully once.

mod common;
mod tcp_mock;

use std::time::Duration;

use proptest::prelude::*;
use sans_io::flow::SockEvent;
use sans_io::wire::tcp::flags;
use tcp_mock::*;

#[derive(Debug, Clone)]
struct Script {
    /// Engine-to-guest frames dropped: this percentage, pseudo-randomly from the seed (for
    /// the first 10 s; then the link heals).
    loss_pct: u64,
    loss_seed: u64,
    /// The guest sends its FIN with the data (else separately, after its ACK).
    fin_with_data: bool,
    /// The host reports PeerClosed before Readable.
    eof_first: bool,
    /// The host answers before it has seen the guest's FIN.
    answer_early: bool,
    len: usize,
}

fn script() -> impl Strategy<Value = Script> {
    (
        0u64..50,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        1usize..5000,
    )
        .prop_map(
            |(loss_pct, loss_seed, fin_with_data, eof_first, answer_early, len)| Script {
                loss_pct,
                loss_seed,
                fin_with_data,
                eof_first,
                answer_early,
                len,
            },
        )
}

/// One echo exchange under `sc`; `ECHO_DEBUG=1` prints the frames towards the guest.
fn echo(sc: Script) -> Result<(), TestCaseError> {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, Some(7));
    let request: Vec<u8> = (0..sc.len).map(|i| (i % 253) as u8).collect();
    let data_seq = g.seq;
    let fin_seq = data_seq.wrapping_add(request.len() as u32);
    let mut guest_acked = data_seq; // what the engine acknowledged of the guest's stream
    let mut got = Vec::new();
    let mut got_fin = false;
    let mut answered = false;
    let mut frame_no = 0usize;
    let mut last_resend = h.now;
    let start = h.now;

    let send_request = |h: &mut H, g: &mut Guest, acked: u32| {
        // (Re)send what isn't acknowledged: the data, and the FIN.
        let off = acked.wrapping_sub(data_seq) as usize;
        if off < request.len() {
            g.seq = acked;
            let fl = if sc.fin_with_data {
                flags::ACK | flags::PSH | flags::FIN
            } else {
                flags::ACK | flags::PSH
            };
            g.send(h, fl, &request[off..]);
        } else if acked == fin_seq {
            g.seq = fin_seq;
            g.send(h, flags::ACK | flags::FIN, &[]);
        }
        h.flush();
    };
    send_request(&mut h, &mut g, guest_acked);

    for _ in 0..2000 {
        // The host side: echo once the request is in, then close.
        let sock = h.io.sock(s).clone();
        if !answered && sock.written.len() == request.len() && (sc.answer_early || sock.shut) {
            answered = true;
            h.io.sock(s).rx.extend_from_slice(&request);
            h.io.sock(s).eof = true;
            if sc.eof_first {
                h.event(s, SockEvent::PeerClosed);
                h.event(s, SockEvent::Readable);
            } else {
                h.event(s, SockEvent::Readable);
                h.event(s, SockEvent::PeerClosed);
            }
        }
        // The link, lossy towards the guest.
        let segs: Vec<Seg> = h
            .take()
            .into_iter()
            .filter(|x| {
                frame_no += 1;
                let healed = h.now - start >= Duration::from_secs(10);
                let keep = healed || mix(sc.loss_seed ^ frame_no as u64) % 100 >= sc.loss_pct;
                if std::env::var("ECHO_DEBUG").is_ok() {
                    eprintln!(
                        "{:?} seq+{} ack={} len={} fl={:#x} keep={keep}",
                        h.now,
                        x.seq.wrapping_sub(g.ack),
                        x.ack,
                        x.payload.len(),
                        x.flags
                    );
                }
                keep
            })
            .collect();
        let before = g.ack;
        for seg in &segs {
            if seg.has(flags::RST) {
                // Only acceptable as the answer to a late retransmission of the guest's FIN
                // after the engine finished cleanly and forgot the flow (our last ACKs lost).
                prop_assert_eq!(h.io.sock(s).closed, Some(false), "reset: {:?}", seg);
                prop_assert!(got_fin && h.engine.tcp().is_empty(), "reset: {:?}", seg);
                guest_acked = fin_seq.wrapping_add(1);
                continue;
            }
            if seg.has(flags::ACK) && seq_after(seg.ack, guest_acked) {
                guest_acked = seg.ack;
            }
            if seg.seq == g.ack {
                got.extend_from_slice(&seg.payload);
                g.ack = g.ack.wrapping_add(seg.payload.len() as u32);
                if seg.has(flags::FIN) {
                    prop_assert!(!got_fin);
                    got_fin = true;
                    g.ack = g.ack.wrapping_add(1);
                }
            }
        }
        if g.ack != before
            || segs
                .iter()
                .any(|x| !x.payload.is_empty() || x.has(flags::FIN))
        {
            g.send(&mut h, flags::ACK, &[]);
            h.flush();
        }
        let done_guest = guest_acked == fin_seq.wrapping_add(1);
        if !done_guest && h.now - last_resend >= Duration::from_millis(500) {
            last_resend = h.now;
            send_request(&mut h, &mut g, guest_acked);
        }
        if done_guest && got_fin && h.io.sock(s).closed.is_some() {
            break;
        }
        h.advance(Duration::from_millis(100));
    }
    prop_assert_eq!(
        h.io.sock(s).written.len(),
        request.len(),
        "guest to host, exactly once"
    );
    prop_assert_eq!(
        &h.io.sock(s).written,
        &request,
        "guest to host, exactly once"
    );
    prop_assert!(h.io.sock(s).fin_passed_on(), "guest FIN passed on");
    prop_assert_eq!(got.len(), request.len(), "host to guest, exactly once");
    prop_assert_eq!(&got, &request, "host to guest, exactly once");
    prop_assert!(got_fin, "host FIN delivered");
    prop_assert_eq!(h.io.sock(s).closed, Some(false), "closed gracefully");
    h.advance(Duration::from_secs(5));
    prop_assert_eq!(h.engine.tcp().len(), 0);
    h.check();
    Ok(())
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seq_after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

#[test]
fn regression_reset() {
    echo(Script {
        loss_pct: 44,
        loss_seed: 8836027814777353847,
        fin_with_data: true,
        eof_first: false,
        answer_early: false,
        len: 1,
    })
    .unwrap();
}

#[test]
fn heavy_loss_with_a_one_byte_tail() {
    for seed in 0..50 {
        echo(Script {
            loss_pct: 50,
            loss_seed: seed,
            fin_with_data: seed % 2 == 0,
            eof_first: seed % 3 == 0,
            answer_early: seed % 5 == 0,
            len: 1461,
        })
        .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn every_byte_once_every_fin_delivered(sc in script()) {
        echo(sc)?;
    }
}
