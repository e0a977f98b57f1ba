//! The engine's host sockets on a real kernel, in a network namespace of their own.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollEvent, EpollFlags};
use sans_io::flow::{
    Bind, CloseSockets, DgramSockets, ListenSpec, PeekSlots, Peeked, PingSockets, Proto, SockEvent,
    SockRef, StreamSockets,
};

use super::table::PeekOffCap;
use super::{ListenOptions, Report, Sockets};
use crate::netlink::Netlink;
use crate::reactor::Reactor;
use crate::socket_sys::tcp_info::at_eof;
use crate::socket_sys::{ioctl_int, listen_socket, local_addr, readable_bytes, setsockopt_int};
use crate::tokens::{socket_token, TOKEN_LISTENER_BASE, TOKEN_SOCKET_BASE};
use crate::vnet_hdr::VnetHeader;

const LOOPBACKS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Runs `f` on a thread of its own in a new network namespace with only loopback, up: the
/// machine's own interfaces never see a packet. Needs root (CAP_SYS_ADMIN); says so and
/// skips otherwise, except under CI.
fn in_fresh_netns(f: impl FnOnce() + Send + 'static) {
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("socket tests need root under CI");
        }
        eprintln!("\n*** SKIPPED: socket tests need root (a network namespace of their own) ***\n");
        return;
    }
    let handle = std::thread::spawn(move || {
        // SAFETY: affects this thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
        }
        let mut nl = Netlink::open().expect("netlink");
        let lo = nl.link_index("lo").expect("lo");
        nl.set_link_up(lo, true).expect("lo up");
        f();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

struct Rig {
    reactor: Reactor,
    sockets: Sockets,
}

impl Rig {
    fn new(sockets: Sockets) -> Rig {
        let reactor = Reactor::new(&[]).unwrap();
        let mut sockets = sockets;
        sockets.attach(&reactor).unwrap();
        Rig { reactor, sockets }
    }

    /// Collects reports until `done` says so (bounded by 5 s).
    fn pump(&mut self, mut done: impl FnMut(&[Report]) -> bool) -> Vec<Report> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        let mut events = [EpollEvent::empty(); 16];
        loop {
            while let Some(r) = self.sockets.next_report() {
                seen.push(r);
            }
            if done(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "timed out; saw {seen:?}");
            let n = self.reactor.wait(&mut events, Some(100)).unwrap();
            for ev in &events[..n] {
                if Sockets::owns_token(ev.data()) {
                    self.sockets.ready(ev.data(), ev.events());
                }
            }
        }
    }

    /// A listener on loopback, a connection to it: (client, server side), both readable.
    fn pair(&mut self, addr: IpAddr) -> (SockRef, SockRef) {
        let (client, server) = self.pair_as_handed_over(addr);
        // Readable, as the core makes them once the guest's handshake is complete.
        self.sockets.set_interest(client, true, false);
        self.sockets.set_interest(server, true, false);
        (client, server)
    }

    /// [`Rig::pair`] with the sockets as the shim hands them over: no interest.
    fn pair_as_handed_over(&mut self, addr: IpAddr) -> (SockRef, SockRef) {
        let spec = ListenSpec {
            proto: Proto::Tcp,
            addr: Some(addr),
            iface: None,
            port: 0,
        };
        let before = self.sockets.listeners.slot_count();
        let (n, errors) = self.sockets.listen(&spec, ListenOptions::default());
        assert_eq!((n, errors), (1, vec![]));
        let target = self.sockets.listeners.get(before).unwrap().addr;
        let client = self
            .sockets
            .tcp_connect(target, Bind::default(), Some(1400))
            .unwrap();
        let seen = self.pump(|r| {
            r.contains(&Report::Event(client, SockEvent::Connected))
                && r.iter().any(|r| matches!(r, Report::Accepted { .. }))
        });
        let Some(Report::Accepted { sock, peer, local }) = seen
            .iter()
            .find(|r| matches!(r, Report::Accepted { .. }))
            .copied()
        else {
            unreachable!()
        };
        assert_eq!(local, target);
        assert_eq!(peer.ip(), addr);
        (client, sock)
    }

    /// Hands the sockets what epoll reports within `wait`, as a wake-up would.
    fn deliver_events(&mut self, wait: Duration) {
        let mut events = [EpollEvent::empty(); 16];
        let ms = wait.as_millis().min(u128::from(u16::MAX)) as u16;
        let n = self.reactor.wait(&mut events, Some(ms)).unwrap();
        for ev in &events[..n] {
            if Sockets::owns_token(ev.data()) {
                self.sockets.ready(ev.data(), ev.events());
            }
        }
    }

    /// Hands the sockets what epoll reports until `ready` says the kernel got there (within
    /// 5 s), then what it reports still: the edges that brought it.
    fn deliver_until(&mut self, what: &str, mut ready: impl FnMut(&Rig) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ready(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.deliver_events(Duration::from_millis(10));
        }
        self.deliver_events(Duration::from_millis(10));
    }

    /// The reports queued now.
    fn reports(&mut self) -> Vec<Report> {
        std::iter::from_fn(|| self.sockets.next_report()).collect()
    }

    fn fd(&self, s: SockRef) -> RawFd {
        self.sockets.slot(s).unwrap().1
    }
}

fn peek(rig: &mut Rig, s: SockRef, offset: usize, len: usize) -> Vec<u8> {
    peek_to_end(rig, s, offset, len).0
}

/// The bytes peeked, and whether the stream ends right after them.
fn peek_to_end(rig: &mut Rig, s: SockRef, offset: usize, len: usize) -> (Vec<u8>, bool) {
    let mut buf = vec![0u8; len];
    let Peeked { n, eof } = rig.sockets.peek(s, offset, &mut buf).unwrap();
    buf.truncate(n);
    (buf, eof)
}

#[test]
fn connected_and_accepted_sockets_report_nothing_until_the_core_asks() {
    let mut rig = Rig::new(Sockets::new());
    let (client, server) = rig.pair_as_handed_over(IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(rig.sockets.send(client, b"ping").unwrap(), 4);
    assert_eq!(rig.sockets.send(server, b"pong").unwrap(), 4);
    // Both have data waiting: epoll tells us (stream sockets are watched for input from the
    // start), the core hears nothing.
    rig.deliver_until("both pings", |r| {
        readable_bytes(r.fd(server)).unwrap() >= 4 && readable_bytes(r.fd(client)).unwrap() >= 4
    });
    assert_eq!(rig.sockets.next_report(), None);
    // Interest on: both readable at once, and without an epoll_ctl.
    let updates = rig.sockets.stats().epoll_updates;
    rig.sockets.set_interest(server, true, false);
    rig.sockets.set_interest(client, true, false);
    assert_eq!(
        rig.reports(),
        vec![
            Report::Event(server, SockEvent::Readable),
            Report::Event(client, SockEvent::Readable)
        ]
    );
    assert_eq!(rig.sockets.stats().epoll_updates, updates);
}

/// Request and response, as the core does them: readable interest off while everything
/// peeked is in flight, back on once the guest acknowledged it. No `epoll_ctl` for that, and
/// input that arrives meanwhile is reported when the interest comes back.
#[test]
fn interest_off_and_on_costs_no_epoll_call_and_loses_no_input() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        rig.reports();
        let updates = rig.sockets.stats().epoll_updates;
        for i in 0..20u8 {
            assert_eq!(rig.sockets.send(client, &[i]).unwrap(), 1);
            rig.pump(|r| r.contains(&Report::Event(server, SockEvent::Readable)));
            // All of it, and short: nothing more to read.
            assert_eq!(peek(&mut rig, server, 0, 100), [i]);
            rig.sockets.set_interest(server, false, false);
            rig.sockets.after_batch();
            rig.sockets.discard(server, 1).unwrap();
            rig.sockets.set_interest(server, true, false);
            rig.sockets.after_batch();
            assert_eq!(rig.reports(), vec![]);
        }
        assert_eq!(rig.sockets.stats().epoll_updates, updates);

        // Input while the interest is off: epoll's edge is kept for when it is back on.
        rig.sockets.set_interest(server, false, false);
        assert_eq!(rig.sockets.send(client, b"late").unwrap(), 4);
        rig.deliver_until("the late input", |r| {
            readable_bytes(r.fd(server)).unwrap() >= 4
        });
        assert_eq!(rig.reports(), vec![]);
        rig.sockets.set_interest(server, true, false);
        // The wake-up ends before the report is handled: it is not queued a second time.
        rig.sockets.after_batch();
        assert_eq!(
            rig.reports(),
            vec![Report::Event(server, SockEvent::Readable)]
        );
        assert_eq!(peek(&mut rig, server, 0, 100), b"late");
        rig.sockets.discard(server, 4).unwrap();

        // The end of the stream while the interest is off: reported when it is back on, after
        // the input before it, and a short peek knows it.
        rig.sockets.set_interest(server, false, false);
        assert_eq!(rig.sockets.send(client, b"end").unwrap(), 3);
        rig.sockets.shutdown_write(client).unwrap();
        rig.deliver_until("the FIN", |r| at_eof(r.fd(server)));
        assert_eq!(rig.reports(), vec![]);
        rig.sockets.set_interest(server, true, false);
        assert_eq!(
            rig.reports(),
            vec![
                Report::Event(server, SockEvent::Readable),
                Report::Event(server, SockEvent::PeerClosed)
            ]
        );
        assert_eq!(
            peek_to_end(&mut rig, server, 0, 100),
            (b"end".to_vec(), true)
        );
        assert_eq!(rig.sockets.stats().epoll_updates, updates);
    });
}

/// Watched edge-triggered, a socket is still reported as level-triggering would: readable
/// again after a wake-up whose peeks left input behind, writable again while the core still
/// waits for room.
#[test]
fn readiness_left_unused_is_reported_again_after_the_wake_up() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        rig.reports();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(rig.sockets.send(client, &data).unwrap(), data.len());
        rig.deliver_until("all of it", |r| {
            readable_bytes(r.fd(server)).unwrap() >= data.len()
        });
        assert!(rig
            .reports()
            .contains(&Report::Event(server, SockEvent::Readable)));
        // A peek that stops short of the end (a full frame, say): readable again, with no
        // new input.
        assert_eq!(peek(&mut rig, server, 0, 4000), &data[..4000]);
        rig.sockets.after_batch();
        assert!(rig.sockets.has_reports());
        assert_eq!(
            rig.reports(),
            vec![Report::Event(server, SockEvent::Readable)]
        );
        // The rest, short: nothing more until more comes.
        assert_eq!(peek(&mut rig, server, 4000, 8000), &data[4000..]);
        rig.sockets.after_batch();
        assert_eq!(rig.reports(), vec![]);

        // Writable: reported, and again after the wake-up while the core still wants it.
        rig.sockets.set_interest(client, true, true);
        rig.pump(|r| r.contains(&Report::Event(client, SockEvent::Writable)));
        rig.sockets.after_batch();
        rig.pump(|r| r.contains(&Report::Event(client, SockEvent::Writable)));
        rig.sockets.set_interest(client, true, false);
        rig.sockets.after_batch();
        rig.deliver_events(Duration::from_millis(10));
        assert_eq!(rig.reports(), vec![]);
    });
}

/// A connect costs the socket's registration and no other `epoll_ctl`, input that came with
/// its completion is kept for the core, and waiting for room costs one poll.
#[test]
fn a_connect_costs_no_epoll_call_and_input_with_its_completion_is_kept() {
    in_fresh_netns(|| {
        use std::io::Write;
        let mut rig = Rig::new(Sockets::new());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let updates = rig.sockets.stats().epoll_updates;
        let client = rig
            .sockets
            .tcp_connect(listener.local_addr().unwrap(), Bind::default(), None)
            .unwrap();
        // The peer greets and closes before we hear of the connect's completion.
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"hello").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        rig.deliver_until("the greeting", |r| at_eof(r.fd(client)));
        assert_eq!(
            rig.reports(),
            vec![Report::Event(client, SockEvent::Connected)]
        );
        assert_eq!(rig.sockets.stats().epoll_updates, updates);
        // The core wants input once the guest's handshake is complete.
        rig.sockets.set_interest(client, true, false);
        assert_eq!(
            rig.reports(),
            vec![
                Report::Event(client, SockEvent::Readable),
                Report::Event(client, SockEvent::PeerClosed)
            ]
        );
        assert_eq!(
            peek_to_end(&mut rig, client, 0, 100),
            (b"hello".to_vec(), true)
        );
        // Everything is in flight to the guest (no input wanted); waiting for room: one poll,
        // which finds it. No more of it: nothing.
        rig.sockets.set_interest(client, false, true);
        assert_eq!(rig.sockets.stats().epoll_updates, updates + 1);
        rig.pump(|r| r.contains(&Report::Event(client, SockEvent::Writable)));
        rig.sockets.set_interest(client, false, false);
        rig.sockets.after_batch();
        rig.deliver_events(Duration::from_millis(10));
        assert_eq!(rig.reports(), vec![]);
        assert_eq!(rig.sockets.stats().epoll_updates, updates + 1);
    });
}

fn peeking_at_offsets(sockets: Sockets, addr: IpAddr) {
    let mut rig = Rig::new(sockets);
    let (client, server) = rig.pair(addr);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        sent += rig.sockets.send(client, &data[sent..]).unwrap();
    }
    rig.pump(|r| r.contains(&Report::Event(server, SockEvent::Readable)));
    // Wait until everything is there, then peek around.
    let deadline = Instant::now() + Duration::from_secs(5);
    while readable_bytes(rig.fd(server)).unwrap() < data.len() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(peek(&mut rig, server, 0, 10), &data[0..10]);
    assert_eq!(peek(&mut rig, server, 10, 10), &data[10..20]);
    assert_eq!(peek(&mut rig, server, 20, 1000), &data[20..1020]);
    // A retransmission: back to an earlier offset.
    assert_eq!(peek(&mut rig, server, 5, 10), &data[5..15]);
    // The guest acknowledged 12 bytes: offsets move with them.
    rig.sockets.discard(server, 12).unwrap();
    assert_eq!(peek(&mut rig, server, 3, 10), &data[15..25]);
    assert_eq!(peek(&mut rig, server, 13, 10), &data[25..35]);
    rig.sockets.discard(server, 20).unwrap();
    assert_eq!(peek(&mut rig, server, 3, 4), &data[35..39]);
    // Far ahead: beyond the data there is nothing (yet).
    assert_eq!(peek(&mut rig, server, data.len(), 10), b"");
    assert_eq!(
        peek(&mut rig, server, data.len() - 40, 100),
        &data[data.len() - 8..]
    );
    rig.sockets.discard(server, data.len() - 32).unwrap();
    assert_eq!(readable_bytes(rig.fd(server)).unwrap(), 0);
    assert!(rig.sockets.discard(server, 1).is_err());

    // The end of the stream after a last few bytes: PeerClosed once, from the event; after
    // it, a peek that comes up short says the end follows, and queues nothing.
    assert_eq!(rig.sockets.send(client, b"tail").unwrap(), 4);
    rig.sockets.shutdown_write(client).unwrap();
    let seen = rig.pump(|r| r.contains(&Report::Event(server, SockEvent::PeerClosed)));
    assert_eq!(peek_to_end(&mut rig, server, 0, 2), (b"ta".to_vec(), false));
    assert_eq!(peek_to_end(&mut rig, server, 2, 10), (b"il".to_vec(), true));
    assert_eq!(peek_to_end(&mut rig, server, 4, 10), (Vec::new(), true));
    assert!(rig.sockets.next_report().is_none(), "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|r| **r == Report::Event(server, SockEvent::PeerClosed))
            .count(),
        1
    );
    // Seeks (setting SO_PEEK_OFF) happen only for the retransmission above, when the
    // kernel supports it.
    let seeks = rig.sockets.stats().peek_seeks;
    match rig.sockets.peek_off {
        PeekOffCap::Yes => assert!((1..=3).contains(&seeks), "{seeks} seeks"),
        _ => assert_eq!(seeks, 0),
    }
    rig.sockets.close(client, false);
    rig.sockets.close(server, false);
    assert_eq!(rig.sockets.open_sockets(), 0);
}

/// With readable interest off (the core's, while all it peeked is in flight) no event tells
/// the end of the stream: the peek does, and queues no report behind the core's back.
fn a_peek_tells_the_end(sockets: Sockets) {
    let mut rig = Rig::new(sockets);
    let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    while rig.sockets.next_report().is_some() {}
    rig.sockets.set_interest(server, false, false);
    assert_eq!(rig.sockets.send(client, b"last").unwrap(), 4);
    rig.sockets.shutdown_write(client).unwrap();
    // No readiness signal with interest off: look at the socket's state, for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !at_eof(rig.fd(server)) {
        assert!(Instant::now() < deadline, "the FIN never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Short, but the end isn't known yet from the socket's events: a second peek finds it.
    assert_eq!(
        peek_to_end(&mut rig, server, 0, 10),
        (b"last".to_vec(), false)
    );
    assert_eq!(peek_to_end(&mut rig, server, 4, 10), (Vec::new(), true));
    assert_eq!(rig.sockets.next_report(), None);
    // Interest back on: readable, but the end is not reported a second time.
    rig.sockets.set_interest(server, true, false);
    let seen = rig.pump(|r| r.contains(&Report::Event(server, SockEvent::Readable)));
    assert!(
        !seen.contains(&Report::Event(server, SockEvent::PeerClosed)),
        "{seen:?}"
    );
    rig.sockets.close(client, false);
    rig.sockets.close(server, false);
}

#[test]
fn a_peek_tells_the_end_of_the_stream_without_queueing_a_report() {
    in_fresh_netns(|| {
        a_peek_tells_the_end(Sockets::new());
        let mut sockets = Sockets::new();
        sockets.disable_peek_off();
        a_peek_tells_the_end(sockets);
    });
}

/// The kernel's peek offset as it is (-1: never set).
fn kernel_peek_off(fd: RawFd) -> i32 {
    crate::socket_sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap()
}

/// Exchanges whose every peek starts at the first unacknowledged byte (each answer
/// acknowledged before the next) leave the kernel's peek offset unset: no system call a
/// connection for it. The first peek past that byte sets it, and later ones follow it.
#[test]
fn peeks_from_the_first_unacknowledged_byte_set_no_peek_offset() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let fd = rig.fd(server);
        for answer in [&b"first answer"[..], b"second", b"third one"] {
            assert_eq!(rig.sockets.send(client, answer).unwrap(), answer.len());
            let deadline = Instant::now() + Duration::from_secs(5);
            while readable_bytes(fd).unwrap() < answer.len() {
                assert!(Instant::now() < deadline, "the answer never arrived");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(peek(&mut rig, server, 0, 100), answer);
            rig.sockets.discard(server, answer.len()).unwrap();
            assert_eq!(kernel_peek_off(fd), -1);
        }
        assert_eq!(rig.sockets.stats().peek_seeks, 0);

        // Pipelined: the second peek starts past what the first left in flight.
        assert_eq!(rig.sockets.send(client, b"0123456789").unwrap(), 10);
        let deadline = Instant::now() + Duration::from_secs(5);
        while readable_bytes(fd).unwrap() < 10 {
            assert!(Instant::now() < deadline, "the data never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(peek(&mut rig, server, 0, 4), b"0123");
        assert_eq!(kernel_peek_off(fd), -1);
        assert_eq!(peek(&mut rig, server, 4, 4), b"4567");
        assert_eq!(kernel_peek_off(fd), 8);
        rig.sockets.discard(server, 4).unwrap();
        assert_eq!(kernel_peek_off(fd), 4);
        assert_eq!(peek(&mut rig, server, 4, 10), b"89");
        // Setting it the first time is no seek; going back for a retransmission is.
        assert_eq!(rig.sockets.stats().peek_seeks, 0);
        assert_eq!(peek(&mut rig, server, 0, 2), b"45");
        assert_eq!(rig.sockets.stats().peek_seeks, 1);
        rig.sockets.close(client, false);
        rig.sockets.close(server, false);
    });
}

#[test]
fn connect_accept_and_peek_at_offsets() {
    in_fresh_netns(|| {
        peeking_at_offsets(Sockets::new(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        peeking_at_offsets(Sockets::new(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    });
}

/// A run of equal-sized datagrams leaves as one segmented send (UDP_SEGMENT) and arrives as
/// the same datagrams; sizes beyond the route's MTU, which the kernel won't segment, go one
/// by one (and are not tried segmented again), in order with the rest.
#[test]
fn udp_runs_go_segmented_and_arrive_as_sent() {
    in_fresh_netns(|| {
        let mut nl = Netlink::open().expect("netlink");
        let lo_index = nl.link_index("lo").expect("lo");
        nl.set_link_mtu(lo_index, 1500).expect("lo mtu");
        for lo in LOOPBACKS {
            let server = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut rig = Rig::new(Sockets::new());
            let s = rig
                .sockets
                .udp_open(Bind::default(), server.local_addr().unwrap())
                .unwrap();
            // Ten of 1200 bytes and a shorter one (one run), one of 700 alone, two of 1000
            // (a run), then three of 2000 (above the MTU: fragmented one by one).
            let mut lens = vec![1200; 10];
            lens.extend([300, 700, 1000, 1000, 2000, 2000, 2000]);
            let datagrams: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|k| (i * 7 + k) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = datagrams.iter().map(|d| &d[..]).collect();
            let before = rig.sockets.stats().segmented_sends;
            assert_eq!(rig.sockets.udp_send_many(s, &refs).unwrap(), refs.len());
            // The 11-datagram run and the pair; the 2000-byte run was refused.
            assert_eq!(rig.sockets.stats().segmented_sends - before, 2);
            let mut buf = [0u8; 4096];
            for (i, want) in datagrams.iter().enumerate() {
                let n = server.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &want[..], "datagram {i}");
            }
            // Learnt: 2000-byte runs now go one by one without a refused try.
            let refs = [&datagrams[14][..], &datagrams[15][..]];
            let before = rig.sockets.stats().segmented_sends;
            assert_eq!(rig.sockets.udp_send_many(s, &refs).unwrap(), 2);
            assert_eq!(rig.sockets.stats().segmented_sends, before);
            for want in refs {
                let n = server.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], want);
            }
        }
    });
}

#[test]
fn udp_connected_socket_sends_and_receives_datagrams() {
    in_fresh_netns(|| {
        for lo in LOOPBACKS {
            let server = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut rig = Rig::new(Sockets::new());
            let s = rig
                .sockets
                .udp_open(Bind::default(), server.local_addr().unwrap())
                .unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(
                rig.sockets.udp_recv(s, &mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            assert_eq!(rig.sockets.udp_send(s, b"one").unwrap(), 3);
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"one");
            server.send_to(b"reply", from).unwrap();
            rig.pump(|seen| {
                seen.iter()
                    .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
            });
            let n = rig.sockets.udp_recv(s, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"reply");

            // Several at once, each into its slot after the offset, truncated to it.
            for msg in [&b"a"[..], b"bb", b"this one is too long"] {
                server.send_to(msg, from).unwrap();
            }
            rig.pump(|seen| {
                seen.iter()
                    .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
            });
            let mut slots = [0u8; 4 * 8];
            let mut lens = [0usize; 4];
            let n = rig
                .sockets
                .udp_recv_many(s, &mut slots, 8, 2, &mut lens)
                .unwrap();
            assert_eq!((n, &lens[..3]), (3, &[1, 2, 6][..]));
            assert_eq!(&slots[2..3], b"a");
            assert_eq!(&slots[10..12], b"bb");
            assert_eq!(&slots[18..24], b"this o");
            assert_eq!(
                rig.sockets
                    .udp_recv_many(s, &mut slots, 8, 2, &mut lens)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::WouldBlock
            );
            rig.sockets.close(s, false);
            assert_eq!(rig.sockets.open_sockets(), 0);
        }
    });
}

/// A peer's run (sent with UDP_SEGMENT) reaches a flow socket whole and is handed over one
/// datagram a slot, in order; what the slots had no room for waits, and the socket, empty by
/// then, is reported readable again after the wake-up. Waiting datagrams go before those that
/// arrive after them.
#[test]
fn udp_runs_arrive_whole_and_spread_over_the_slots() {
    in_fresh_netns(|| {
        for lo in LOOPBACKS {
            let peer = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut rig = Rig::new(Sockets::new());
            let s = rig
                .sockets
                .udp_open(Bind::default(), peer.local_addr().unwrap())
                .unwrap();
            rig.sockets.udp_send(s, b"hello").unwrap();
            let mut buf = [0u8; 64];
            let (_, ours) = peer.recv_from(&mut buf).unwrap();
            peer.connect(ours).unwrap();
            // Ten of 100 bytes and one of 30 in one send.
            let send_run = |tag: u8| {
                let run: Vec<u8> = (0..1030u32).map(|i| (i % 251) as u8 ^ tag).collect();
                let segment: libc::c_int = 100;
                // SAFETY: plain setsockopt with an int (UDP_SEGMENT), on and off again.
                let set = |size: &libc::c_int| unsafe {
                    libc::setsockopt(
                        peer.as_raw_fd(),
                        libc::SOL_UDP,
                        103,
                        (size as *const libc::c_int).cast(),
                        4,
                    )
                };
                assert_eq!(set(&segment), 0);
                assert_eq!(peer.send(&run).unwrap(), run.len());
                assert_eq!(set(&0), 0);
                run.chunks(100).map(<[u8]>::to_vec).collect::<Vec<_>>()
            };
            let readable = Report::Event(s, SockEvent::Readable);

            let (offset, slot_len) = (2, 2 + 120);
            let mut slots = vec![0u8; 8 * slot_len];
            let mut lens = [0usize; 8];
            let mut take = |rig: &mut Rig| -> io::Result<Vec<Vec<u8>>> {
                let n = rig
                    .sockets
                    .udp_recv_many(s, &mut slots, slot_len, offset, &mut lens)?;
                Ok((0..n)
                    .map(|i| slots[i * slot_len + offset..][..lens[i]].to_vec())
                    .collect())
            };

            let want = send_run(0);
            rig.pump(|seen| seen.contains(&readable));
            let mut got = take(&mut rig).unwrap();
            assert_eq!(got.len(), 8);
            let runs = rig.sockets.stats().received_runs;
            assert_eq!((runs.runs, runs.datagrams), (1, 11));
            // The socket is empty; the rest is announced after the wake-up, and only then.
            rig.sockets.after_batch();
            assert_eq!(rig.reports(), [readable]);
            got.extend(take(&mut rig).unwrap());
            rig.sockets.after_batch();
            assert_eq!(rig.reports(), []);
            assert_eq!(
                take(&mut rig).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            assert_eq!(got, want);

            // Three wait; a datagram arriving meanwhile comes after them.
            let mut want = send_run(0x55);
            rig.pump(|seen| seen.contains(&readable));
            let mut got = take(&mut rig).unwrap();
            peer.send(b"seven!!").unwrap();
            rig.pump(|seen| seen.contains(&readable));
            got.extend(take(&mut rig).unwrap());
            want.push(b"seven!!".to_vec());
            assert_eq!(got, want);
            let runs = rig.sockets.stats().received_runs;
            assert_eq!((runs.runs, runs.datagrams), (2, 22));
        }
    });
}

#[test]
fn udp_listener_and_reply_socket_share_the_forwarded_port() {
    in_fresh_netns(|| {
        for lo in LOOPBACKS {
            let mut rig = Rig::new(Sockets::new());
            let spec = ListenSpec {
                proto: Proto::Udp,
                addr: Some(lo),
                iface: None,
                port: 0,
            };
            let (n, errors) = rig.sockets.listen(&spec, ListenOptions::default());
            assert_eq!((n, errors), (1, vec![]));
            let (l, local) = rig.sockets.udp_listeners().next().unwrap();
            assert_ne!(local.port(), 0);

            let peer = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            peer.send_to(b"first", local).unwrap();
            let is_readable = |s: SockRef| {
                move |seen: &[Report]| {
                    seen.iter()
                        .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
                }
            };
            rig.pump(is_readable(l));
            let mut buf = [0u8; 64];
            let (n, from) = rig.sockets.udp_recv_from(l, &mut buf).unwrap();
            assert_eq!(
                (&buf[..n], from),
                (&b"first"[..], peer.local_addr().unwrap())
            );

            // An answer sent through the listener leaves from the forwarded port.
            assert_eq!(rig.sockets.udp_send_via(l, from, b"via").unwrap(), 3);
            let (n, src) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], src), (&b"via"[..], local));

            // So do answers from a reply socket; the peer's next datagram comes to it, not
            // the listener.
            let r = rig.sockets.udp_reply_open(local, None, from).unwrap();
            answer_and_hear_back(&mut rig, r, &peer, local);
            assert_eq!(
                rig.sockets.udp_recv_from(l, &mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            // Another peer still reaches the listener.
            let other = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
            other.send_to(b"other", local).unwrap();
            rig.pump(is_readable(l));
            let (n, from) = rig.sockets.udp_recv_from(l, &mut buf).unwrap();
            assert_eq!(
                (&buf[..n], from),
                (&b"other"[..], other.local_addr().unwrap())
            );

            // Several at once, each with its sender, into its slot after the offset.
            let third = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
            third
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            other.send_to(b"o1", local).unwrap();
            third.send_to(b"t1", local).unwrap();
            other.send_to(b"o2, too long", local).unwrap();
            rig.pump(is_readable(l));
            let mut slots = [0u8; 4 * 8];
            let mut lens = [0usize; 4];
            let mut peers = [SocketAddr::new(lo, 0); 4];
            let n = rig
                .sockets
                .udp_recv_many_from(l, &mut slots, 8, 2, &mut lens, &mut peers)
                .unwrap();
            let (o, t) = (other.local_addr().unwrap(), third.local_addr().unwrap());
            assert_eq!(
                (n, &lens[..3], &peers[..3]),
                (3, &[2, 2, 6][..], &[o, t, o][..])
            );
            assert_eq!(
                (&slots[2..4], &slots[10..12], &slots[18..24]),
                (&b"o1"[..], &b"t1"[..], &b"o2, to"[..])
            );
            assert_eq!(
                rig.sockets
                    .udp_recv_many_from(l, &mut slots, 8, 2, &mut lens, &mut peers)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::WouldBlock
            );

            // With the listener closed (its forward removed), a reply socket for an exchange
            // begun on it still binds where it was: the answer leaves from the forwarded port,
            // and the peer's next datagram comes to it.
            assert_eq!(rig.sockets.unlisten(Proto::Udp, local.port()), vec![l]);
            let r = rig.sockets.udp_reply_open(local, None, t).unwrap();
            answer_and_hear_back(&mut rig, r, &third, local);
        }
    });
}

/// Reply socket `r` answers `peer`, whose datagrams went to `local`: the answer leaves from
/// `local`, and the peer's next datagram comes to `r`.
fn answer_and_hear_back(rig: &mut Rig, r: SockRef, peer: &std::net::UdpSocket, local: SocketAddr) {
    let mut buf = [0u8; 64];
    rig.sockets.udp_send(r, b"answer").unwrap();
    let (n, src) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], src), (&b"answer"[..], local));
    peer.send_to(b"next", local).unwrap();
    rig.pump(|seen: &[Report]| {
        seen.iter()
            .any(|x| matches!(x, Report::Event(y, SockEvent::Readable) if *y == r))
    });
    let n = rig.sockets.udp_recv(r, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"next");
}

#[test]
fn ping_sockets_echo_on_loopback_with_identifiers() {
    in_fresh_netns(|| {
        // Per namespace; the fresh one allows nobody.
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
        for (lo, req, rep) in [
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 8u8, 0u8),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 128, 129),
        ] {
            let mut rig = Rig::new(Sockets::new());
            let (s, id) = rig.sockets.ping_open(Bind::default(), lo, 0x4242).unwrap();
            assert_eq!(id, 0x4242);
            let msg = [req, 0, 0, 0, 0, 0, 0, 9, b'h', b'i'];
            rig.sockets.ping_send(s, &msg).unwrap();
            rig.pump(|seen| {
                seen.iter()
                    .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
            });
            let mut buf = [0u8; 64];
            let n = rig.sockets.ping_recv(s, &mut buf).unwrap();
            assert_eq!(buf[0], rep);
            assert_eq!(u16::from_be_bytes([buf[4], buf[5]]), 0x4242);
            assert_eq!(&buf[6..n], &[0, 9, b'h', b'i']);
            rig.sockets.close(s, false);
        }
    });
}

/// Slots of `lens` bytes every `stride` bytes from `first`, peeked at `offset`: the bytes of
/// each slot, concatenated, and what the peek said.
fn peek_slots(rig: &mut Rig, s: SockRef, offset: usize, lens: &[usize]) -> (Vec<u8>, Peeked) {
    let (first, stride) = (54, 1600);
    let mut buf = vec![0xeeu8; first + stride * lens.len()];
    let slots = PeekSlots {
        first,
        stride,
        lens,
    };
    let p = rig.sockets.peek_slots(s, offset, &mut buf, slots).unwrap();
    let mut out = Vec::new();
    let mut left = p.n;
    for i in 0..lens.len() {
        let area = slots.area(i);
        let n = left.min(area.len());
        out.extend_from_slice(&buf[area.start..area.start + n]);
        left -= n;
        // Nothing is written outside the areas.
        let gap_end = if i + 1 < lens.len() {
            slots.area(i + 1).start
        } else {
            buf.len()
        };
        assert!(buf[area.end..gap_end].iter().all(|&b| b == 0xee));
    }
    (out, p)
}

/// Several frame payloads peeked by one call (recvmsg with an iovec where SO_PEEK_OFF works,
/// one peek per area where it doesn't) read the same bytes as single peeks.
fn peeking_into_slots(sockets: Sockets) {
    let mut rig = Rig::new(sockets);
    let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        sent += rig.sockets.send(client, &data[sent..]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while readable_bytes(rig.fd(server)).unwrap() < data.len() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (got, p) = peek_slots(&mut rig, server, 0, &[1460, 1460, 1460, 700]);
    assert_eq!((p.n, p.eof), (5080, false));
    assert_eq!(got, &data[..5080]);
    // On from where that ended, then a step back (a retransmission).
    let (got, _) = peek_slots(&mut rig, server, 5080, &[1460; 8]);
    assert_eq!(got, &data[5080..5080 + 8 * 1460]);
    let (got, _) = peek_slots(&mut rig, server, 100, &[1000, 1000]);
    assert_eq!(got, &data[100..2100]);
    rig.sockets.discard(server, 1000).unwrap();
    let (got, _) = peek_slots(&mut rig, server, 1100, &[1460; 3]);
    assert_eq!(got, &data[2100..2100 + 3 * 1460]);
    // Short: the queue ends inside the third area.
    let at = data.len() - 1000 - 2000;
    let (got, p) = peek_slots(&mut rig, server, at, &[1460; 3]);
    assert_eq!((p.n, p.eof), (2000, false));
    assert_eq!(got, &data[1000 + at..]);
    // The end of the stream right after the last bytes.
    rig.sockets.shutdown_write(client).unwrap();
    rig.pump(|r| r.contains(&Report::Event(server, SockEvent::PeerClosed)));
    let (got, p) = peek_slots(&mut rig, server, at, &[1460; 3]);
    assert_eq!((p.n, p.eof), (2000, true));
    assert_eq!(got, &data[1000 + at..]);
    rig.sockets.close(client, false);
    rig.sockets.close(server, false);
}

#[test]
fn peeking_into_several_slots_at_once() {
    in_fresh_netns(|| peeking_into_slots(Sockets::new()));
}

/// The guest's window becomes the bound on what the host socket advertises; a closed one the
/// kernel's smallest bound rather than an error.
#[test]
fn window_clamp_follows_what_the_core_asks() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let clamp_of = |rig: &Rig| {
            crate::socket_sys::getsockopt_int(
                rig.fd(server),
                libc::IPPROTO_TCP,
                libc::TCP_WINDOW_CLAMP,
            )
            .unwrap()
        };
        let autotuned = clamp_of(&rig);
        rig.sockets.clamp_window(server, 100_000);
        assert_eq!(clamp_of(&rig), 100_000);
        assert_ne!(autotuned, 100_000);
        rig.sockets.clamp_window(server, 0);
        let least = clamp_of(&rig);
        assert!((1..100_000).contains(&least), "{least}");
        rig.sockets.clamp_window(server, u32::MAX);
        assert!(clamp_of(&rig) > 100_000);
        assert_eq!(rig.sockets.stats().window_clamps, 3);
        rig.sockets.close(client, false);
        rig.sockets.close(server, false);
    });
}

#[test]
fn peeking_into_slots_without_so_peek_off() {
    in_fresh_netns(|| {
        let mut sockets = Sockets::new();
        sockets.disable_peek_off();
        peeking_into_slots(sockets);
    });
}

#[test]
fn peeking_without_so_peek_off() {
    in_fresh_netns(|| {
        let mut sockets = Sockets::new();
        sockets.disable_peek_off();
        peeking_at_offsets(sockets, IpAddr::V4(Ipv4Addr::LOCALHOST));
    });
}

#[test]
fn partial_sends_into_a_small_send_buffer() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        setsockopt_int(rig.fd(client), libc::SOL_SOCKET, libc::SO_SNDBUF, 8192).unwrap();
        setsockopt_int(rig.fd(server), libc::SOL_SOCKET, libc::SO_RCVBUF, 8192).unwrap();
        let space = rig.sockets.send_space(client).unwrap();
        assert!(space > 0 && space <= 8192, "{space}");
        let data = vec![7u8; 1 << 20];
        // What send_space promises, a send takes, whatever the queue holds.
        let mut sent = 0;
        for _ in 0..64 {
            let space = rig.sockets.send_space(client).unwrap() as usize;
            if space == 0 {
                break;
            }
            let n = space.min(3000);
            assert_eq!(rig.sockets.send(client, &data[sent..sent + n]).unwrap(), n);
            sent += n;
        }
        loop {
            match rig.sockets.send(client, &data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent > 0 && sent < data.len(), "sent {sent}");
        let unacked = ioctl_int(rig.fd(client), libc::TIOCOUTQ).unwrap();
        assert!(unacked > 0, "{unacked}");
        let space = rig.sockets.send_space(client).unwrap();
        assert!(space < 8192, "{space}");

        // The writer asks to hear about space; the reader drains what arrived.
        rig.sockets.set_interest(client, true, true);
        let q = readable_bytes(rig.fd(server)).unwrap();
        assert!(q > 0);
        rig.sockets.discard(server, q).unwrap();
        let mut drained = q;
        // Keep draining until the kernel says the writer has room again.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = [EpollEvent::empty(); 16];
        'wait: loop {
            assert!(Instant::now() < deadline, "no Writable");
            let q = readable_bytes(rig.fd(server)).unwrap();
            if q > 0 {
                rig.sockets.discard(server, q).unwrap();
                drained += q;
            }
            let n = rig.reactor.wait(&mut events, Some(10)).unwrap();
            for ev in &events[..n] {
                rig.sockets.ready(ev.data(), ev.events());
            }
            while let Some(r) = rig.sockets.next_report() {
                if r == Report::Event(client, SockEvent::Writable) {
                    break 'wait;
                }
            }
        }
        rig.sockets.set_interest(client, true, false);
        // And so on until everything went through.
        let deadline = Instant::now() + Duration::from_secs(10);
        while drained < data.len() {
            assert!(
                Instant::now() < deadline,
                "drained {drained} of {}",
                data.len()
            );
            match rig.sockets.send(client, &data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            let q = readable_bytes(rig.fd(server)).unwrap();
            if q > 0 {
                rig.sockets.discard(server, q).unwrap();
                drained += q;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(sent, data.len());
    });
}

#[test]
fn close_with_reset_is_an_error_for_the_peer() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        rig.sockets.send(client, b"unread").unwrap();
        rig.sockets.close(client, true);
        let seen = rig.pump(|r| {
            r.iter()
                .any(|r| matches!(r, Report::Event(s, SockEvent::Error(_)) if *s == server))
        });
        assert!(
            seen.contains(&Report::Event(server, SockEvent::Error(libc::ECONNRESET))),
            "{seen:?}"
        );
        rig.sockets.close(server, false);
    });
}

#[test]
fn refused_connect_is_an_error() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        // A port nobody listens on: bind one, note it, close it.
        let probe = listen_socket("127.0.0.1:0".parse().unwrap(), None, false).unwrap();
        let target = local_addr(probe.as_raw_fd()).unwrap();
        drop(probe);
        match rig.sockets.tcp_connect(target, Bind::default(), None) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
            Ok(s) => {
                let seen = rig.pump(|r| !r.is_empty());
                assert_eq!(
                    seen,
                    [Report::Event(s, SockEvent::Error(libc::ECONNREFUSED))]
                );
                rig.sockets.close(s, false);
            }
        }
        assert_eq!(rig.sockets.open_sockets(), 0);
    });
}

#[test]
fn listening_on_both_families_and_on_a_busy_port() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let probe = listen_socket("[::]:0".parse().unwrap(), None, false).unwrap();
        let port = local_addr(probe.as_raw_fd()).unwrap().port();
        drop(probe);
        let spec = ListenSpec {
            proto: Proto::Tcp,
            addr: None,
            iface: None,
            port,
        };
        let (n, errors) = rig.sockets.listen(&spec, ListenOptions::default());
        assert_eq!((n, errors), (2, vec![]));
        // Both families reach it, each on its own socket.
        for target in [
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ] {
            let c = rig
                .sockets
                .tcp_connect(target, Bind::default(), None)
                .unwrap();
            let seen = rig.pump(|r| r.iter().any(|r| matches!(r, Report::Accepted { .. })));
            let local = seen
                .iter()
                .find_map(|r| match r {
                    Report::Accepted { local, .. } => Some(*local),
                    _ => None,
                })
                .unwrap();
            assert_eq!(local, target);
            rig.sockets.close(c, true);
        }
        // Taken already: a warning naming the port, not a failure.
        let (n, errors) = rig.sockets.listen(&spec, ListenOptions::default());
        assert_eq!(n, 0);
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].to_string().contains(&format!("TCP port {port}")),
            "{}",
            errors[0]
        );
        assert_eq!(errors[0].errno, libc::EADDRINUSE);
    });
}

/// Set in the environment of the re-executed test binary that runs
/// [`listener_at_the_fd_limit_child`] (the descriptor limit is the whole process's).
const FD_LIMIT_CHILD: &str = "OS_SHIM_FD_LIMIT_CHILD";

/// Sets the soft descriptor limit; returns the one before.
fn set_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let before = lim.rlim_cur;
        lim.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        before
    }
}

/// The lowest free descriptor number: as a limit, no descriptor can be opened.
fn lowest_free_fd() -> u64 {
    // SAFETY: dup of stdin, closed at once.
    let fd = unsafe { libc::dup(0) };
    assert!(fd >= 0);
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    fd as u64
}

/// Listener events seen (and handled) within `d`, and the reports they made.
fn listener_wakeups(rig: &mut Rig, d: Duration) -> (usize, Vec<Report>) {
    let end = Instant::now() + d;
    let mut events = [EpollEvent::empty(); 16];
    let (mut wakeups, mut reports) = (0, Vec::new());
    while Instant::now() < end {
        let n = rig.reactor.wait(&mut events, Some(10)).unwrap();
        for ev in &events[..n] {
            if (TOKEN_LISTENER_BASE..TOKEN_SOCKET_BASE).contains(&ev.data()) {
                wakeups += 1;
            }
            if Sockets::owns_token(ev.data()) {
                rig.sockets.ready(ev.data(), ev.events());
            }
        }
        while let Some(r) = rig.sockets.next_report() {
            reports.push(r);
        }
    }
    (wakeups, reports)
}

fn accepted(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r, Report::Accepted { .. }))
        .count()
}

/// Runs only in the re-executed test binary: lowers the descriptor limit there.
#[test]
fn listener_at_the_fd_limit_child() {
    if std::env::var_os(FD_LIMIT_CHILD).is_none() {
        return;
    }
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        // A connection of ours, to close later; it brings a listener of its own.
        let (client, _server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let spec = ListenSpec {
            proto: Proto::Tcp,
            addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            iface: None,
            port: 0,
        };
        assert_eq!(rig.sockets.listen(&spec, ListenOptions::default()).0, 1);
        let target = rig.sockets.listeners.get(1).unwrap().addr;
        // Three connections wait in the backlog; then no descriptor is left.
        let waiting: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(target).unwrap())
            .collect();
        let normal = set_nofile(lowest_free_fd());

        // accept4 fails with EMFILE: the listener is put aside, not polled in a loop.
        let (wakeups, reports) = listener_wakeups(&mut rig, Duration::from_millis(300));
        assert!(
            wakeups <= 2,
            "{wakeups} wake-ups for a listener that can't accept"
        );
        assert_eq!(accepted(&reports), 0);
        assert_eq!(rig.sockets.stats().accept_paused, 1);
        let resume = rig.sockets.poll_timeout().expect("a time to try again");
        let left = resume.saturating_since(crate::reactor::monotonic_now());
        assert!(left > Duration::from_millis(500) && left <= Duration::from_secs(1));

        // A descriptor is freed: accepting again at once.
        set_nofile(normal);
        rig.sockets.close(client, true);
        let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(200));
        assert_eq!(accepted(&reports), 3, "{reports:?}");
        assert_eq!(rig.sockets.poll_timeout(), None);

        // Again at the limit; this time nothing is closed, and the time comes.
        let more = std::net::TcpStream::connect(target).unwrap();
        set_nofile(lowest_free_fd());
        let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(100));
        assert_eq!(accepted(&reports), 0);
        assert_eq!(rig.sockets.stats().accept_paused, 2);
        set_nofile(normal);
        let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(100));
        assert_eq!(accepted(&reports), 0, "still put aside");
        let resume = rig.sockets.poll_timeout().unwrap();
        rig.sockets.handle_timeout(resume);
        let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(200));
        assert_eq!(accepted(&reports), 1);
        drop((waiting, more));
    });
}

#[test]
fn a_listener_at_the_fd_limit_is_put_aside_not_spun_on() {
    if std::env::var_os(FD_LIMIT_CHILD).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "sockets::tests::listener_at_the_fd_limit_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FD_LIMIT_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child test hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed") || text.contains("SKIPPED"),
        "the child test didn't run: {text}"
    );
}

#[test]
fn tokens_of_closed_sockets_are_stale() {
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let old = socket_token(client.0, rig.sockets.slots.gen(client.0 as usize).unwrap());
        rig.sockets.close(client, true);
        rig.sockets.close(server, true);
        // The slot is reused; an event queued for its previous socket is dropped.
        let (client2, _server2) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(client2 == client || client2 == server);
        rig.sockets.ready(old, EpollFlags::EPOLLIN);
        assert!(rig.sockets.next_report().is_none());
        assert!(rig.sockets.stats().stale_events >= 1);
    });
}

/// A guest's receive queue whose buffers (of odd sizes, in memory of our own) are lent for
/// the peeks below, counting the copies the socket layer asks its lender for.
struct LentRx {
    mem: std::sync::Arc<vm_memory::GuestMemoryMmap>,
    driver: crate::vhost_user::driver_model::DriverQueue,
    queue: virtio_queue::Queue,
    lend: crate::vhost_user::lend::RxLend,
    buffers: std::collections::HashMap<u16, (u64, u32)>,
    fills: usize,
}

impl LentRx {
    fn new(sizes: &[u32]) -> LentRx {
        use crate::vhost_user::driver_model::{Buffer, DriverQueue};
        use vm_memory::{GuestAddress, GuestMemoryMmap};
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut driver = DriverQueue::new(&mem, GuestAddress(0), 64);
        let mut buffers = std::collections::HashMap::new();
        let mut addr = 0x10000;
        for &len in sizes {
            let head = driver.add_chain(
                &mem,
                &[Buffer {
                    addr,
                    len,
                    writable: true,
                }],
            );
            buffers.insert(head, (addr, len));
            addr += u64::from(len) + 64;
        }
        let queue = driver.device_queue();
        LentRx {
            mem: std::sync::Arc::new(mem),
            driver,
            queue,
            lend: crate::vhost_user::lend::RxLend::new(),
            buffers,
            fills: 0,
        }
    }

    /// The payloads of the frames the device used, concatenated.
    fn payloads(&mut self, header_room: usize) -> Vec<u8> {
        use vm_memory::{Bytes, GuestAddress};
        let mut frame = Vec::new();
        let mut out = Vec::new();
        let mut used = 0;
        while let Some((head, len)) = self.driver.take_used(&*self.mem) {
            let (addr, _) = self.buffers[&head];
            let mut part = vec![0u8; len as usize];
            self.mem.read_slice(&mut part, GuestAddress(addr)).unwrap();
            frame.extend(part);
            used += 1;
            if used == u16::from_le_bytes([frame[10], frame[11]]) {
                out.extend_from_slice(&frame[12 + header_room..]);
                frame.clear();
                used = 0;
            }
        }
        out
    }
}

struct RxLender(std::rc::Rc<std::cell::RefCell<LentRx>>);

impl sans_io::wire::lent::PayloadLender for RxLender {
    fn reserve(
        &mut self,
        header_room: usize,
        lens: &[usize],
        areas: &mut Vec<sans_io::wire::lent::LentArea>,
    ) -> usize {
        let rx = &mut *self.0.borrow_mut();
        rx.lend
            .reserve(&mut rx.queue, &rx.mem, 0, header_room, lens, areas)
    }
    fn fill(&mut self, at: usize, data: &[u8]) {
        let rx = &mut *self.0.borrow_mut();
        rx.fills += 1;
        rx.lend.fill(at, data);
    }
    fn settle(&mut self, filled: &[usize]) -> u64 {
        self.0.borrow_mut().lend.settle(filled)
    }
}

/// Socket data peeked into lent receive buffers of odd sizes, frames spanning several: the
/// kernel writes it there in one call where SO_PEEK_OFF works (the lender is never asked to
/// copy), and it is copied through the lender where it doesn't; the same bytes either way.
fn peeking_into_lent_buffers(sockets: Sockets, vectored: bool) {
    use sans_io::wire::offload::L4Checksum;
    use sans_io::wire::FrameQueue;
    let mut rig = Rig::new(sockets);
    let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        sent += rig.sockets.send(client, &data[sent..]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while readable_bytes(rig.fd(server)).unwrap() < data.len() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let rx = std::rc::Rc::new(std::cell::RefCell::new(LentRx::new(&[
        1500, 700, 4096, 333, 2049, 97, 3000, 1500, 1500,
    ])));
    let mut out = FrameQueue::new();
    out.set_l4_checksum(L4Checksum::Partial);
    out.set_payload_lender(Some(Box::new(RxLender(rx.clone()))));
    let sockets = &mut rig.sockets;
    let lens = [1400, 1400, 3000, 1400];
    let pushed = out.push_lent(
        54,
        &lens,
        0,
        |areas| sockets.peek_lent(server, 100, areas).unwrap().n,
        |_, headers, _| {
            headers[..54].fill(0xab);
            54
        },
    );
    assert_eq!(pushed, Some((4, 7200)));
    let rx = &mut *rx.borrow_mut();
    assert_eq!(
        rx.fills == 0,
        vectored,
        "{} copies through the lender",
        rx.fills
    );
    for (headers, lent) in out.entries() {
        rx.lend
            .publish(
                &mut rx.queue,
                &*rx.mem,
                headers,
                lent.unwrap(),
                VnetHeader::default(),
            )
            .unwrap();
    }
    assert_eq!(rx.payloads(54), &data[100..7300]);
    rig.sockets.close(client, false);
    rig.sockets.close(server, false);
}

#[test]
fn peeking_into_lent_buffers_at_once() {
    in_fresh_netns(|| peeking_into_lent_buffers(Sockets::new(), true));
}

#[test]
fn peeking_into_lent_buffers_without_so_peek_off() {
    in_fresh_netns(|| {
        let mut sockets = Sockets::new();
        sockets.disable_peek_off();
        peeking_into_lent_buffers(sockets, false);
    });
}

/// A guest's transmit payload in "its memory" (here a buffer of the test's), read back through
/// checked copies that are counted.
struct TxMemory {
    bytes: Vec<u8>,
    /// Per frame, where its rest's pieces are in `bytes`.
    frames: Vec<Vec<(usize, usize)>>,
    reads: std::cell::Cell<usize>,
}

impl sans_io::wire::external::ExternalPayloads for TxMemory {
    fn read(&self, p: sans_io::wire::external::ExternalPayload, dst: &mut [u8]) -> usize {
        self.reads.set(self.reads.get() + 1);
        let rest: Vec<u8> = self.frames[p.frame as usize]
            .iter()
            .flat_map(|&(at, len)| self.bytes[at..at + len].iter().copied())
            .collect();
        let n = p.len.min(dst.len());
        dst[..n].copy_from_slice(&rest[p.at..p.at + n]);
        n
    }
}

/// Guest payload left in its memory goes out with our own bytes in one `sendmsg` when its
/// areas are lent (the link is never asked to copy), and is copied through the link when they
/// aren't: the peer gets the same bytes either way.
#[test]
fn sending_payload_from_lent_transmit_areas() {
    use sans_io::wire::external::{ExternalPayload, ExternalPayloads, SendPiece};
    use sans_io::wire::lent::LentArea;
    in_fresh_netns(|| {
        let mut rig = Rig::new(Sockets::new());
        let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let memory = TxMemory {
            bytes: (0..10_000u32).map(|i| (i % 253) as u8).collect(),
            frames: vec![vec![(5, 700), (2000, 1), (3001, 1499)], vec![(9000, 999)]],
            reads: std::cell::Cell::new(0),
        };
        let lent: Vec<Vec<LentArea>> = memory
            .frames
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|&(at, len)| LentArea {
                        addr: memory.bytes.as_ptr() as usize + at,
                        len,
                    })
                    .collect()
            })
            .collect();
        let pieces = [
            SendPiece::Bytes(b"head one"),
            SendPiece::External(ExternalPayload {
                frame: 0,
                at: 3,
                len: 2197,
            }),
            SendPiece::Bytes(b"head two"),
            SendPiece::External(ExternalPayload {
                frame: 1,
                at: 0,
                len: 999,
            }),
        ];
        let mut expected = b"head one".to_vec();
        let mut rest0 = vec![0u8; 2197];
        memory.read(
            ExternalPayload {
                frame: 0,
                at: 3,
                len: 2197,
            },
            &mut rest0,
        );
        expected.extend(rest0);
        expected.extend_from_slice(b"head two");
        expected.extend_from_slice(&memory.bytes[9000..9999]);
        memory.reads.set(0);

        // SAFETY: the areas are in `memory.bytes`, alive and unchanged until `end`.
        unsafe { crate::tx_loans::lend(lent.iter().map(Vec::as_slice)) };
        let sent = rig.sockets.send_pieces(client, &pieces, &memory).unwrap();
        crate::tx_loans::end();
        assert_eq!(sent, expected.len());
        assert_eq!(memory.reads.get(), 0, "the link was asked to copy");

        // Not lent (any more): copied through the link, the same bytes.
        let sent = rig.sockets.send_pieces(client, &pieces, &memory).unwrap();
        assert_eq!(sent, expected.len());
        assert!(
            memory.reads.get() > 0,
            "payload not lent reached the kernel"
        );

        let both = [expected.clone(), expected].concat();
        let deadline = Instant::now() + Duration::from_secs(5);
        while readable_bytes(rig.fd(server)).unwrap() < both.len() {
            assert!(Instant::now() < deadline, "the data did not arrive");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(peek(&mut rig, server, 0, both.len()), both);
        rig.sockets.close(client, false);
        rig.sockets.close(server, false);
    });
}
