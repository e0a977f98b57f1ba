//! Guest connections out to the host: handshakes, data both ways, closing, resets.

mod common;
mod tcp_mock;

use sans_io::engine::EngineOptions;
use sans_io::flow::SockEvent;
use sans_io::wire::tcp::flags;
use tcp_mock::*;

#[test]
fn syn_ack_only_once_the_host_connected() {
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.syn(&mut h, 1460, Some(7));
    assert!(h.take().is_empty(), "nothing before the host connects");
    let s = h.last_sock();
    let sock = h.io.sock(s).clone();
    assert_eq!(sock.dst, Some("203.0.113.5:80".parse().unwrap()));
    assert_eq!(sock.mss, Some(1460));
    assert_eq!(h.engine.counters().tcp.opened, 1);

    // The guest retransmits its SYN: still nothing.
    g.seq = g.seq.wrapping_sub(1);
    g.syn(&mut h, 1460, Some(7));
    assert!(h.take().is_empty());

    h.event(s, SockEvent::Connected);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    let sa = &segs[0];
    assert!(sa.is(flags::SYN | flags::ACK));
    assert_eq!(sa.ack, g.seq);
    assert_eq!(sa.mss, Some(65480), "MSS from the default MTU");
    assert_eq!(sa.wscale, Some(8));
    assert_eq!(sa.src, g.peer);
    assert_eq!(sa.dst, g.me);
    assert!(sa.window > 0);
    // Not reading the socket until the guest completes the handshake.
    assert_eq!(h.io.sock(s).interest, (false, false));

    g.receive(&segs);
    g.ack_all(&mut h);
    assert!(h.take().is_empty());
    assert_eq!(h.io.sock(s).interest, (true, false));
    h.check();
}

#[test]
fn gateway_reaches_the_host_loopback() {
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40000", "192.0.2.1:22");
    g.syn(&mut h, 1460, None);
    let s = h.last_sock();
    assert_eq!(h.io.sock(s).dst, Some("127.0.0.1:22".parse().unwrap()));
}

#[test]
fn refused_connect_is_reset_at_once() {
    // Refused synchronously.
    let mut h = H::new();
    h.io.refuse = true;
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:81");
    g.syn(&mut h, 1460, None);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].is(flags::RST | flags::ACK));
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(h.engine.counters().tcp.connect_refused, 1);
    assert_eq!(h.engine.tcp().len(), 0);

    // Refused later, as the connect completes.
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40001", "203.0.113.5:81");
    g.syn(&mut h, 1460, None);
    let s = h.last_sock();
    h.event(s, SockEvent::Error(111));
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].is(flags::RST | flags::ACK));
    assert_eq!(segs[0].ack, g.seq);
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.counters().tcp.connect_refused, 1);
    assert_eq!(h.engine.counters().tcp.flows, 0);
    h.check();
}

#[test]
fn a_syn_retransmission_crossing_our_reset_opens_no_second_connect() {
    use sans_io::flow::tcp::TOMBSTONE_TIME;
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:81");
    g.syn(&mut h, 1460, None);
    let isn = g.seq.wrapping_sub(1);
    let s = h.last_sock();
    // The connect is refused, and in the same batch the guest's SYN comes again (it left
    // before our RST arrived).
    h.event_held(s, SockEvent::Error(111));
    g.seq = isn;
    g.send(&mut h, flags::SYN, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert!(segs
        .iter()
        .all(|x| x.is(flags::RST | flags::ACK) && x.ack == isn.wrapping_add(1)));
    assert_eq!(h.io.socks.len(), 1, "no second connect");
    assert_eq!(h.engine.counters().tcp.opened, 1);
    assert_eq!(h.engine.counters().tcp.stale_syns, 1);
    assert_eq!(h.engine.tcp().len(), 0);
    // Later retransmissions (our RST was lost) get the same answer.
    h.advance(std::time::Duration::from_secs(1));
    g.seq = isn;
    g.send(&mut h, flags::SYN, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].is(flags::RST | flags::ACK));
    assert_eq!(h.io.socks.len(), 1);
    // A new attempt (another ISN) connects.
    g.seq = isn.wrapping_add(100_000);
    g.syn(&mut h, 1460, None);
    assert_eq!(h.io.socks.len(), 2);
    assert!(h.take().is_empty());
    h.check();

    // Refused at once: the same. And the tombstone goes after a while.
    let mut h = H::new();
    h.io.refuse = true;
    let mut g = Guest::new("192.0.2.2:40001", "203.0.113.5:81");
    g.syn(&mut h, 1460, None);
    assert_eq!(h.take().len(), 1);
    h.io.refuse = false;
    g.seq = g.seq.wrapping_sub(1);
    g.syn(&mut h, 1460, None);
    assert_eq!(h.take().len(), 1);
    assert!(h.io.socks.is_empty());
    assert_eq!(h.engine.counters().tcp.stale_syns, 1);
    h.advance(TOMBSTONE_TIME);
    g.seq = g.seq.wrapping_sub(1);
    g.syn(&mut h, 1460, None);
    assert_eq!(h.io.socks.len(), 1, "forgotten: a connect again");
}

#[test]
fn reset_attempts_are_remembered_in_bounded_number() {
    use sans_io::flow::tcp::MAX_TOMBSTONES;
    let mut h = H::new();
    h.io.refuse = true;
    let guest = |i: usize| Guest::new(&format!("192.0.2.2:{}", 20000 + i), "203.0.113.5:81");
    for i in 0..=MAX_TOMBSTONES {
        guest(i).syn(&mut h, 1460, None);
    }
    assert_eq!(h.take().len(), MAX_TOMBSTONES + 1);
    h.io.refuse = false;
    // The oldest was forgotten, the next is still there.
    guest(1).syn(&mut h, 1460, None);
    assert!(h.io.socks.is_empty());
    guest(0).syn(&mut h, 1460, None);
    assert_eq!(h.io.socks.len(), 1);
}

#[test]
fn data_both_ways_byte_exact() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, Some(7));

    // Guest to host: straight into the socket. A short request: its ACK waits for the
    // answer to carry it.
    g.data(&mut h, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.io.sock(s).written, b"GET / HTTP/1.0\r\n\r\n");
    assert!(h.take().is_empty());

    // Host to guest: peeked at the in-flight offset, discarded only when acknowledged.
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    h.io.sock(s).rx.extend_from_slice(&body);
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), 4, "1460-byte segments: {segs:?}");
    assert!(segs.iter().all(|s| s.payload.len() <= 1460));
    assert!(segs.iter().all(|x| x.has(flags::ACK) && x.ack == g.seq));
    assert_eq!(h.engine.counters().tcp.acks_carried, 1);
    let offsets: Vec<usize> =
        h.io.sock(s)
            .peeks
            .iter()
            .filter(|p| p.1 > 0)
            .map(|p| p.0)
            .collect();
    assert_eq!(offsets, [0, 1460, 2920, 4380]);
    assert_eq!(h.io.sock(s).discarded, 0);
    // Everything the socket holds is in flight: still watched, for bytes no peek has seen.
    assert!(h.io.sock(s).interest.0);

    let got = g.receive(&segs);
    assert_eq!(got, body);
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 5000);
    assert!(h.io.sock(s).rx.is_empty());
    assert!(h.io.sock(s).interest.0);
    assert_eq!(h.engine.counters().tcp.bytes_to_guest, 5000);
    assert_eq!(h.engine.counters().tcp.bytes_to_host, 18);
    h.check();
}

#[test]
fn an_acknowledged_answer_costs_no_peek_and_the_next_one_is_reported() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    for round in 0..3u8 {
        g.data(&mut h, b"request");
        h.take();
        h.io.sock(s).rx.extend_from_slice(&[round; 100]);
        h.event(s, SockEvent::Readable);
        let segs = h.take();
        assert_eq!(g.receive(&segs), vec![round; 100]);
        assert!(
            h.io.sock(s).interest.0,
            "watched for the next answer meanwhile"
        );
        let peeks = h.io.sock(s).peeks.len();
        g.ack_all(&mut h);
        assert_eq!(h.io.sock(s).peeks.len(), peeks, "no peek to hear EAGAIN");
        assert!(h.io.sock(s).interest.0, "watched for the next answer");
        assert!(h.io.sock(s).rx.is_empty());
    }
    assert_eq!(h.io.sock(s).written, b"requestrequestrequest");
    h.check();
}

#[test]
fn partial_acks_discard_exactly_what_was_acknowledged() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).rx.extend_from_slice(&[1u8; 3000]);
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), 3);
    // The guest takes only the first segment.
    g.receive(&segs[..1]);
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 1460);
    // More data arrives while the rest is in flight; the guest acknowledges the rest. The
    // socket had been peeked empty: no peek on that ACK; the socket is watched all along, and
    // its readiness (the new bytes, which no peek has seen) brings the new data.
    h.io.sock(s).rx.extend_from_slice(&[2u8; 100]);
    g.receive(&segs[1..]);
    let peeks = h.io.sock(s).peeks.len();
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 3000);
    assert_eq!(h.io.sock(s).peeks.len(), peeks);
    assert!(h.io.sock(s).interest.0);
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].payload, vec![2u8; 100]);
    h.check();
}

#[test]
fn fin_from_host_after_all_data_then_guest_closes() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, Some(7));
    h.io.sock(s).rx.extend_from_slice(b"bye");
    h.io.sock(s).eof = true;
    h.event(s, SockEvent::Readable);
    h.event(s, SockEvent::PeerClosed);
    let segs = h.take();
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert_eq!(segs[0].payload, b"bye");
    assert!(segs[1].has(flags::FIN));
    assert_eq!(segs[1].seq, segs[0].seq.wrapping_add(3));
    assert_eq!(g.receive(&segs), b"bye");
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 3);
    assert!(
        h.io.sock(s).closed.is_none(),
        "half-closed: the guest may still send"
    );

    // The guest still sends, then closes.
    g.data(&mut h, b"late");
    assert_eq!(h.io.sock(s).written, b"late");
    h.take();
    g.send(&mut h, flags::FIN | flags::ACK, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].is(flags::ACK));
    assert_eq!(segs[0].ack, g.seq);
    // Both ends done: the close sends the guest's FIN, no shutdown first; nothing is left
    // unread, so it is a FIN and not a reset.
    assert!(!h.io.sock(s).shut, "one system call less");
    assert_eq!(h.io.sock(s).closed, Some(false), "closed gracefully");
    assert!(h.io.sock(s).fin_passed_on());

    // A retransmitted FIN is acknowledged again from TIME_WAIT, then the flow goes.
    g.seq = g.seq.wrapping_sub(1);
    g.send(&mut h, flags::FIN | flags::ACK, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq);
    h.advance(std::time::Duration::from_secs(3));
    assert_eq!(h.engine.tcp().len(), 0);
    h.check();
}

#[test]
fn guest_closes_first_host_keeps_sending() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, Some(7));
    g.data(&mut h, b"request");
    h.take();
    g.send(&mut h, flags::FIN | flags::ACK, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, g.seq, "FIN acknowledged");
    assert!(h.io.sock(s).shut);
    assert_eq!(h.io.sock(s).written, b"request");

    // The host answers at length after the guest's FIN.
    h.io.sock(s).rx.extend_from_slice(&[9u8; 2000]);
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(g.receive(&segs), vec![9u8; 2000]);
    g.ack_all(&mut h);
    h.io.sock(s).eof = true;
    h.event(s, SockEvent::PeerClosed);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].has(flags::FIN));
    g.receive(&segs);
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).closed, Some(false));
    h.check();
}

#[test]
fn a_peek_that_meets_the_end_places_the_fin_without_peer_closed() {
    let mut h = H::new();
    h.io.eof_in_peek = true;
    let (mut g, s) = connected(&mut h, Some(7));
    h.io.sock(s).rx.extend_from_slice(b"bye");
    h.io.sock(s).eof = true;
    h.io.sock(s).peeks.clear();
    // Only `Readable`: the peek's answer says the stream ends after these bytes, and our
    // FIN rides on the frame that carries them.
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].payload, b"bye");
    assert!(segs[0].has(flags::FIN | flags::ACK));
    assert_eq!(
        h.io.sock(s).peeks,
        vec![(0, 3)],
        "no second peek to find the end"
    );
    assert_eq!(g.receive(&segs), b"bye");
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 3);
    assert!(h.io.sock(s).closed.is_none(), "half-closed");
    h.check();
}

#[test]
fn a_resent_last_segment_carries_the_fin_again() {
    use sans_io::flow::tcp::RTO_INITIAL;
    let mut h = H::new();
    h.io.eof_in_peek = true;
    let (mut g, s) = connected(&mut h, Some(7));
    h.io.sock(s).rx.extend_from_slice(b"bye");
    h.io.sock(s).eof = true;
    h.event(s, SockEvent::Readable);
    let lost = h.take();
    assert_eq!(lost.len(), 1);
    assert!(lost[0].has(flags::FIN));
    // Lost: the retransmission is the same segment, FIN and all, not the bytes and a FIN.
    h.advance(RTO_INITIAL);
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(
        (segs[0].seq, &segs[0].payload[..]),
        (lost[0].seq, &b"bye"[..])
    );
    assert!(segs[0].has(flags::FIN));
    assert_eq!(g.receive(&segs), b"bye");
    g.ack_all(&mut h);
    assert_eq!(h.io.sock(s).discarded, 3);
    h.advance(RTO_INITIAL * 4);
    assert!(h.take().is_empty(), "all acknowledged");
    h.check();
}

#[test]
fn an_end_met_by_a_later_peek_follows_the_last_byte_in_flight() {
    let mut h = H::new();
    h.io.eof_in_peek = true;
    let (mut g, s) = connected(&mut h, Some(7));
    h.io.sock(s).rx.extend_from_slice(&[5u8; 1000]);
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    assert_eq!(g.receive(&segs), vec![5u8; 1000]);
    assert!(segs.iter().all(|x| !x.has(flags::FIN)));
    // The end arrives while everything is in flight. The guest's ACK leaves nothing in
    // flight: the socket is watched again, epoll reports the end (RDHUP), and the peek that
    // follows meets it.
    h.io.sock(s).eof = true;
    g.ack_all(&mut h);
    assert!(h.io.sock(s).interest.0);
    assert!(h.take().is_empty());
    h.event(s, SockEvent::PeerClosed);
    let segs = h.take();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].has(flags::FIN));
    assert_eq!(segs[0].seq, g.ack, "right after the last byte");
    h.check();
}

#[test]
fn fin_is_retransmitted_until_acknowledged() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    h.io.sock(s).eof = true;
    h.event(s, SockEvent::PeerClosed);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].has(flags::FIN));
    // Lost. The timer sends it again.
    h.advance(std::time::Duration::from_millis(1100));
    let again = h.take();
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].has(flags::FIN));
    assert_eq!(again[0].seq, segs[0].seq);
    g.receive(&again);
    g.ack_all(&mut h);
    h.advance(std::time::Duration::from_secs(5));
    assert!(h.take().is_empty());
    h.check();
}

#[test]
fn guest_reset_aborts_the_socket() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    g.send(&mut h, flags::RST, &[]);
    h.flush();
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.counters().tcp.resets_received, 1);
    assert_eq!(h.engine.tcp().len(), 0);
    // Anything more on that tuple gets a RST.
    g.data(&mut h, b"x");
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].has(flags::RST));
    h.check();
}

#[test]
fn host_error_resets_the_guest() {
    let mut h = H::new();
    let (g, s) = connected(&mut h, None);
    h.event(s, SockEvent::Error(104));
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].has(flags::RST));
    assert_eq!(segs[0].seq, g.ack);
    assert_eq!(h.io.sock(s).closed, Some(true));
    assert_eq!(h.engine.counters().tcp.resets_sent, 1);
    assert_eq!(h.engine.tcp().len(), 0);
    h.check();
}

#[test]
fn keepalive_is_answered() {
    let mut h = H::new();
    let (mut g, s) = connected(&mut h, None);
    // seq one below what we expect, no payload, then one garbage byte.
    let expected = g.seq;
    g.seq = g.seq.wrapping_sub(1);
    g.send(&mut h, flags::ACK, &[]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, expected);
    g.seq = expected.wrapping_sub(1);
    g.send(&mut h, flags::ACK, &[0]);
    h.flush();
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, expected, "the garbage byte is old: not taken");
    assert!(h.io.sock(s).written.is_empty());
    h.check();
}

#[test]
fn mss_clamped_to_the_mtu_and_window_scaling() {
    let mut h = H::with(config(|o| o.mtu = Some(1500)), EngineOptions::default());
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.syn(&mut h, 9000, Some(9));
    let s = h.last_sock();
    assert_eq!(h.io.sock(s).mss, Some(1460), "the guest's MSS, clamped");
    h.event(s, SockEvent::Connected);
    let segs = h.take();
    assert_eq!(segs[0].mss, Some(1460));
    assert_eq!(segs[0].wscale, Some(8));
    g.receive(&segs);
    g.window = 100; // << 9 = 51200 bytes
    g.ack_all(&mut h);
    h.io.sock(s).rx.extend_from_slice(&[5u8; 60000]);
    h.event(s, SockEvent::Readable);
    let segs = h.take();
    let total: usize = segs.iter().map(|s| s.payload.len()).sum();
    assert_eq!(total, 51200, "the guest's scaled window");
    assert!(segs.iter().all(|s| s.payload.len() <= 1460));
    // Our window is scaled by 8: 1 MiB of send space shows as 4096.
    let mut g2 = g;
    g2.receive(&segs);
    g2.data(&mut h, b"x");
    let ack = h.take();
    assert_eq!(ack.last().unwrap().window, (((1u32 << 20) - 1) >> 8) as u16);

    // IPv6: 60 bytes of headers.
    let mut h = H::with(config(|o| o.mtu = Some(1500)), EngineOptions::default());
    let mut g = Guest::new("[2001:db8::2]:40000", "[2001:db8:1::5]:80");
    g.syn(&mut h, 1440, None);
    let s = h.last_sock();
    h.event(s, SockEvent::Connected);
    let segs = h.take();
    assert_eq!(segs[0].mss, Some(1440));
    assert_eq!(
        segs[0].wscale, None,
        "no scaling unless the guest offers it"
    );
}

#[test]
fn table_full_resets_and_counts() {
    let opts = EngineOptions {
        max_tcp_flows: 2,
        ..EngineOptions::default()
    };
    let mut h = H::with(config(|_| {}), opts);
    for port in [40000, 40001] {
        let mut g = Guest::new(&format!("192.0.2.2:{port}"), "203.0.113.5:80");
        g.syn(&mut h, 1460, None);
    }
    assert!(h.take().is_empty());
    let mut g = Guest::new("192.0.2.2:40002", "203.0.113.5:80");
    g.syn(&mut h, 1460, None);
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].has(flags::RST));
    assert_eq!(h.engine.counters().tcp.table_full, 1);
    assert_eq!(h.io.socks.len(), 2);
}

#[test]
fn no_tcp_drops_silently() {
    let mut h = H::with(config(|o| o.no_tcp = true), EngineOptions::default());
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.syn(&mut h, 1460, None);
    assert!(h.take().is_empty());
    assert!(h.io.socks.is_empty());
    assert_eq!(h.engine.counters().tcp.disabled_drops, 1);
}

#[test]
fn unknown_segments_get_a_reset() {
    let mut h = H::new();
    let mut g = Guest::new("192.0.2.2:40000", "203.0.113.5:80");
    g.ack = 555;
    g.data(&mut h, b"stray");
    let segs = h.take();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].is(flags::RST));
    assert_eq!(segs[0].seq, 555);
    // A RST for nothing gets nothing.
    g.send(&mut h, flags::RST, &[]);
    assert!(h.take().is_empty());
}
