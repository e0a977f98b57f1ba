//! The virtual host on its own: kernel-like socket semantics the engine can rely on.

use std::time::Duration;

use sans_io::flow::{Bind, CloseSockets, Peeked, SockEvent, SockRef, StreamSockets};
use sans_io::fwd::apply::ForwardListeners;
use sans_io::fwd::forwards::{Direction, ListenSocket, ProtoKey};
use sans_io::time::Instant;
use sim::host::{errno, ConnState, HostConfig, VirtualHost};
use sim::scenario::addr;
use sim::{App, Pattern};

fn host() -> VirtualHost {
    let mut h = VirtualHost::new(HostConfig {
        addrs: vec!["198.51.100.2".parse().unwrap()],
        ..HostConfig::default()
    });
    h.listen(addr("203.0.113.10:80"), App::source(300_000));
    h.listen(addr("203.0.113.10:9"), App::sink());
    h.listen(addr("203.0.113.10:7"), App::echo());
    h.listen(addr("203.0.113.10:19"), App::slow_sink(1000));
    h.listen(addr("0.0.0.0:22"), App::sink());
    h
}

/// Runs the host alone until `t`, collecting the events it reports (interest as set).
fn run_to(h: &mut VirtualHost, t: Instant) -> Vec<(Instant, SockRef, SockEvent)> {
    let mut events = Vec::new();
    let mut now = Instant::ZERO;
    loop {
        h.advance(now);
        events.extend(h.events().into_iter().map(|(s, e)| (now, s, e)));
        match h.poll_at() {
            Some(next) if next <= t && next > now => now = next,
            _ => break,
        }
    }
    h.advance(t);
    events.extend(h.events().into_iter().map(|(s, e)| (t, s, e)));
    events
}

/// A connection that wants to read once connected (a socket starts with both interests off,
/// as the OS shim's does).
fn connect(h: &mut VirtualHost, dst: &str) -> SockRef {
    let s = h
        .tcp_connect(addr(dst), Bind::default(), Some(1460))
        .unwrap();
    h.set_interest(s, true, false);
    s
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

#[test]
fn connect_outcomes_come_after_their_delays() {
    let mut h = host();
    let ok = connect(&mut h, "203.0.113.10:80");
    let refused = connect(&mut h, "203.0.113.10:81");
    let local = connect(&mut h, "127.0.0.1:22");
    let nobody = connect(&mut h, "192.0.2.99:80");
    let ev = run_to(&mut h, ms(30_000));
    let first = |s| ev.iter().find(|(_, r, _)| *r == s).copied().unwrap();
    // One round trip of 2 x 500 µs.
    assert_eq!(first(ok), (ms(1), ok, SockEvent::Connected));
    assert_eq!(
        first(refused),
        (ms(1), refused, SockEvent::Error(errno::ECONNREFUSED))
    );
    assert_eq!(first(local).2, SockEvent::Connected);
    assert_eq!(
        first(nobody),
        (ms(20_000), nobody, SockEvent::Error(errno::ETIMEDOUT))
    );
    assert_eq!(h.stats.refused, 1);
    assert_eq!(h.stats.timed_out, 1);
    let c = h.conn(h.conn_of(ok).unwrap());
    assert_eq!(c.mss, Some(1460));
    assert_eq!(
        c.local.ip(),
        "198.51.100.2".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(h.violations.is_empty());
}

#[test]
fn source_data_is_peeked_at_offsets_and_discarded_exactly() {
    let mut h = host();
    let s = connect(&mut h, "203.0.113.10:80");
    let ev = run_to(&mut h, ms(10));
    assert!(ev.iter().any(|e| e.2 == SockEvent::Readable));
    // The receive queue holds at most rcvbuf: the source is flow-controlled.
    assert_eq!(h.readable(s), Some(128 * 1024));
    let mut buf = vec![0; 1000];
    assert_eq!(h.peek(s, 5000, &mut buf).unwrap(), Peeked::bytes(1000));
    let mut expect = vec![0; 1000];
    Pattern(0).fill(5000, &mut expect);
    assert_eq!(buf, expect);
    assert_eq!(h.peek(s, 128 * 1024, &mut buf).unwrap(), Peeked::bytes(0));
    let mut got = Vec::new();
    let mut closed_at = None;
    let mut buf = vec![0; 100_000];
    for round in 0..100 {
        let Peeked { n, eof } = h.peek(s, 0, &mut buf).unwrap();
        assert!(
            !eof || closed_at.is_some(),
            "the end told by a peek before PeerClosed"
        );
        got.extend_from_slice(&buf[..n]);
        h.discard(s, n).unwrap();
        let ev = run_to(&mut h, ms(20 + round));
        if let Some(e) = ev.iter().find(|e| e.2 == SockEvent::PeerClosed) {
            // The FIN comes after every byte of data.
            assert_eq!(h.readable(s).unwrap() + got.len(), 300_000);
            closed_at.get_or_insert(e.0);
        }
        if got.len() == 300_000 {
            break;
        }
    }
    Pattern(0).check(&got, 300_000).unwrap();
    assert!(closed_at.is_some());
    // Discarding beyond what was received is the engine's bug: refused and recorded.
    assert!(h.discard(s, 1).is_err());
    assert_eq!(h.violations.len(), 1, "{:?}", h.violations);
}

#[test]
fn send_buffer_fills_and_drains_to_the_peer() {
    let mut h = host();
    let s = connect(&mut h, "203.0.113.10:9");
    run_to(&mut h, ms(2));
    let data = Pattern(3).bytes(100_000);
    assert_eq!(h.send_space(s).unwrap(), 64 * 1024);
    // Partial send up to the buffer, then EAGAIN.
    assert_eq!(h.send(s, &data).unwrap(), 64 * 1024);
    assert_eq!(h.send_space(s).unwrap(), 0);
    assert_eq!(h.unacked(s), Some(64 * 1024));
    let e = h.send(s, &data[65536..]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errno::EAGAIN));
    h.set_interest(s, true, true);
    let ev = run_to(&mut h, ms(3));
    assert!(ev.contains(&(ms(3), s, SockEvent::Writable)), "{ev:?}");
    let n = h.send(s, &data[65536..]).unwrap();
    assert_eq!(n, 100_000 - 65536);
    h.shutdown_write(s).unwrap();
    run_to(&mut h, ms(5));
    let c = h.conn(h.conn_of(s).unwrap());
    Pattern(3).check(c.received(), 100_000).unwrap();
    assert!(c.app.eof && c.app.fin_sent, "the sink closes after our FIN");
    assert!(c.ours.rx_fin);
    // Sending after shutdown is a violation.
    assert!(h.send(s, b"x").is_err());
    assert_eq!(h.violations.len(), 1);
}

#[test]
fn a_slow_reader_holds_the_sender_back() {
    let mut h = host();
    let s = connect(&mut h, "203.0.113.10:19");
    run_to(&mut h, ms(2));
    let data = Pattern(4).bytes(1 << 20);
    let mut sent = 0;
    let mut t = 2;
    while sent < data.len() && t < 5000 {
        if let Ok(n) = h.send(s, &data[sent..]) {
            sent += n;
        }
        t += 1;
        run_to(&mut h, ms(t));
    }
    // 1 MiB at 1000 bytes/ms, less what the buffers hold, takes most of a second.
    assert!((700..1100).contains(&t), "sent {sent} by {t} ms");
    h.close(s, false);
    run_to(&mut h, ms(t + 2000));
    let c = &h.conns()[0];
    Pattern(4).check(c.received(), 1 << 20).unwrap();
    assert!(c.finished());
}

#[test]
fn echo_and_level_triggered_readiness() {
    let mut h = host();
    let s = connect(&mut h, "203.0.113.10:7");
    run_to(&mut h, ms(2));
    h.send(s, b"hello").unwrap();
    let ev = run_to(&mut h, ms(5));
    assert!(ev.contains(&(ms(3), s, SockEvent::Readable)), "{ev:?}");
    // Level-triggered: reported again while the data stays.
    assert_eq!(h.events(), [(s, SockEvent::Readable)]);
    h.set_interest(s, false, false);
    assert!(h.events().is_empty());
    h.set_interest(s, true, false);
    let mut buf = [0; 16];
    assert_eq!(h.peek(s, 0, &mut buf).unwrap(), Peeked::bytes(5));
    assert_eq!(&buf[..5], b"hello");
    h.discard(s, 5).unwrap();
    assert!(h.events().is_empty());
}

#[test]
fn resets_both_ways() {
    let mut h = host();
    let a = connect(&mut h, "203.0.113.10:9");
    let b = connect(&mut h, "203.0.113.10:9");
    let c = connect(&mut h, "203.0.113.10:80");
    run_to(&mut h, ms(2));
    // The engine resets: the peer hears of it a latency later.
    h.close(a, true);
    // The peer resets: the engine gets ECONNRESET once, then errors.
    h.peer_abort(h.conn_of(b).unwrap());
    let ev = run_to(&mut h, ms(4));
    assert_eq!(
        ev.iter()
            .filter(|e| e.1 == b && e.2 == SockEvent::Error(errno::ECONNRESET))
            .count(),
        1
    );
    assert!(h.conns()[0].peer_reset_at.is_some());
    assert_eq!(
        h.send(b, b"x").unwrap_err().raw_os_error(),
        Some(errno::ECONNRESET)
    );
    // Closing with unread data resets, as Linux does.
    assert!(h.readable(c).unwrap() > 0);
    h.close(c, false);
    run_to(&mut h, ms(6));
    assert!(h.conns()[2].peer_reset_at.is_some());
    assert_eq!(h.stats.engine_resets, 2);
    assert_eq!(h.open_sockets(), 1);
    h.close(b, false);
    assert!(h.violations.is_empty(), "{:?}", h.violations);
    // A socket the engine closed is gone.
    h.close(a, false);
    assert_eq!(h.violations.len(), 1);
}

#[test]
fn inbound_connections_reach_forwarded_ports_only() {
    let mut h = host();
    // The listener the shim opens for `-t 8080` (IPv4).
    let listener = ListenSocket {
        proto: ProtoKey::Tcp,
        addr: addr("0.0.0.0:8080"),
        iface: None,
        to: None,
    };
    h.open_listener(Direction::Inbound, &listener).unwrap();
    let yes = h.remote_connect(
        addr("203.0.113.20:40000"),
        addr("198.51.100.2:8080"),
        App::source(10),
    );
    let no = h.remote_connect(
        addr("203.0.113.20:40001"),
        addr("198.51.100.2:8081"),
        App::source(10),
    );
    run_to(&mut h, ms(1));
    let accepted = h.take_accepts();
    assert_eq!(accepted.len(), 1);
    let (s, peer, local) = accepted[0];
    assert_eq!(
        (peer, local),
        (addr("203.0.113.20:40000"), addr("198.51.100.2:8080"))
    );
    assert_eq!(h.conn_of(s), Some(yes));
    assert_eq!(h.conn(no).state, ConnState::Failed(errno::ECONNREFUSED));
    // Accepted with both interests off: nothing is reported until the engine asks.
    assert!(h.events().is_empty());
    h.set_interest(s, true, false);
    let ev = run_to(&mut h, ms(3));
    assert_eq!(h.readable(s), Some(10));
    assert!(ev.iter().any(|e| e.1 == s && e.2 == SockEvent::PeerClosed));
}

#[test]
fn socket_limit_is_emfile() {
    let mut h = VirtualHost::new(HostConfig {
        max_sockets: 2,
        ..HostConfig::default()
    });
    connect(&mut h, "203.0.113.10:1");
    connect(&mut h, "203.0.113.10:1");
    let e = h
        .tcp_connect(addr("203.0.113.10:1"), Bind::default(), None)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errno::EMFILE));
    let _ = Duration::ZERO;
}

#[test]
fn a_peek_tells_the_end_as_the_os_shim_does() {
    let mut h = VirtualHost::new(HostConfig::default());
    h.listen(addr("203.0.113.10:80"), App::source(10));
    let s = connect(&mut h, "203.0.113.10:80");
    // No interest: the data and the FIN arrive unreported.
    h.set_interest(s, false, false);
    let ev = run_to(&mut h, ms(10));
    assert_eq!(ev, [(ms(1), s, SockEvent::Connected)]);
    assert_eq!(h.readable(s), Some(10));
    let mut buf = [0u8; 100];
    // Short, but no end was reported: not known from this peek...
    assert_eq!(h.peek(s, 0, &mut buf).unwrap(), Peeked::bytes(10));
    // ... a peek of nothing past the last byte tells it.
    assert_eq!(h.peek(s, 10, &mut buf).unwrap(), Peeked::last(0));
    assert_eq!(h.stats.eof_peeks, 1);
    // The engine knows now: no PeerClosed once interest is back.
    h.set_interest(s, true, false);
    let ev = run_to(&mut h, ms(12));
    assert!(ev.iter().all(|e| e.2 != SockEvent::PeerClosed), "{ev:?}");
    // After a reported end, a short peek tells it at once.
    let t = connect(&mut h, "203.0.113.10:80");
    let ev = run_to(&mut h, ms(20));
    assert!(
        ev.iter().any(|e| e.1 == t && e.2 == SockEvent::PeerClosed),
        "{ev:?}"
    );
    assert_eq!(h.peek(t, 4, &mut buf).unwrap(), Peeked::last(6));
    assert_eq!(h.peek(t, 0, &mut buf[..4]).unwrap(), Peeked::bytes(4));
    assert!(h.violations.is_empty(), "{:?}", h.violations);
}
