//! The qemu socket against real UNIX domain sockets in a scratch directory: no network.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};

static N: AtomicU32 = AtomicU32::new(0);

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qemu-sock-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn framed(frames: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in frames {
        v.extend_from_slice(&stream::header(f.len()));
        v.extend_from_slice(f);
    }
    v
}

/// Waits (bounded) until the socket has something to say, then reads; returns the status and
/// the frames.
fn read(s: &mut QemuSocket) -> (ReadStatus, Vec<Vec<u8>>) {
    let mut pfd = libc::pollfd {
        fd: s.fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(r, 1, "nothing happened on the qemu socket within 5 s");
    let mut frames = Vec::new();
    let status = s
        .read_frames(16, &mut |fs| frames.extend(fs.map(<[u8]>::to_vec)))
        .unwrap();
    (status, frames)
}

/// Reads (bounded) until the socket reports something other than `Open`: a guest's departure
/// comes on the wake-up after its last bytes, as it would in the loop.
fn read_until_settled(s: &mut QemuSocket) -> (ReadStatus, Vec<Vec<u8>>) {
    let mut all = Vec::new();
    for _ in 0..4 {
        let (status, frames) = read(s);
        all.extend(frames);
        if status != ReadStatus::Open {
            return (status, all);
        }
    }
    panic!("the qemu socket stayed open after 4 wake-ups");
}

/// Whether the peer closed `c` (EOF within 5 s).
fn closed_by_peer(c: &mut UnixStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Ok(0))
}

#[test]
fn picks_the_first_free_path_and_reuses_stale_ones() {
    let dir = Scratch::new();
    let paths: Vec<PathBuf> = (1..=4).map(|n| dir.path(&format!("s{n}"))).collect();
    // 1: somebody listens; 2: a regular file; 3: a stale socket; 4: free.
    let _live = bind_listener(&paths[0]).unwrap();
    std::fs::write(&paths[1], b"not a socket").unwrap();
    drop(UnixListener::bind(&paths[2]).unwrap());
    assert!(paths[2].exists());
    let (_fd, path) = bind_first_free(paths.clone()).unwrap();
    assert_eq!(path, paths[2]);
    // Everything taken now, except 4.
    let (_fd4, path) = bind_first_free(paths.clone()).unwrap();
    assert_eq!(path, paths[3]);
    let e = bind_first_free(paths.clone()).unwrap_err();
    assert!(matches!(e, SocketError::NoFreePath { .. }), "{e}");
    assert_eq!(std::fs::read(&paths[1]).unwrap(), b"not a socket");
}

#[test]
fn a_given_path_in_use_or_not_a_socket_is_refused() {
    let dir = Scratch::new();
    let p = dir.path("s");
    let _live = bind_listener(&p).unwrap();
    let e = bind_listener(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "UNIX domain socket path {} is in use by a running instance",
            p.display()
        )
    );
    let f = dir.path("file");
    std::fs::write(&f, b"x").unwrap();
    assert!(matches!(bind_listener(&f), Err(SocketError::NotASocket(_))));
}

#[test]
fn one_client_at_a_time_then_the_next() {
    let dir = Scratch::new();
    let p = dir.path("s");
    let mut s = QemuSocket::listen(bind_listener(&p).unwrap(), false).unwrap();

    let mut first = UnixStream::connect(&p).unwrap();
    assert_eq!(read(&mut s), (ReadStatus::Open, vec![]));
    assert!(s.has_client());

    // A second client is closed at once; the first one still works.
    let mut second = UnixStream::connect(&p).unwrap();
    assert_eq!(read(&mut s).0, ReadStatus::Open);
    assert!(closed_by_peer(&mut second));
    assert_eq!(s.stats().refused, 1);
    first.write_all(&framed(&[b"hello"])).unwrap();
    assert_eq!(read(&mut s), (ReadStatus::Open, vec![b"hello".to_vec()]));

    // The first leaves: the next client is served.
    drop(first);
    assert_eq!(read(&mut s), (ReadStatus::GuestLeft(None), vec![]));
    assert!(!s.has_client());
    let mut third = UnixStream::connect(&p).unwrap();
    third.write_all(&framed(&[b"again"])).unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let (status, frames) = read(&mut s);
        assert_eq!(status, ReadStatus::Open);
        got.extend(frames);
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, [b"again".to_vec()]);

    // And frames go back to it, framed.
    let mut q = FrameQueue::new();
    q.push(|v| v.extend_from_slice(b"answer"));
    assert_eq!(
        s.write_frames(&q),
        WriteReport {
            sent: 1,
            dropped: 0
        }
    );
    let mut buf = [0u8; 10];
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\0\0\0\x06answer");
    assert_eq!(s.stats().clients, 2);
}

#[test]
fn a_sending_guest_costs_one_read_per_wake_up_and_a_waiting_connection_is_still_turned_away() {
    let dir = Scratch::new();
    let p = dir.path("s");
    let mut s = QemuSocket::listen(bind_listener(&p).unwrap(), false).unwrap();
    let mut guest = UnixStream::connect(&p).unwrap();
    assert_eq!(read(&mut s), (ReadStatus::Open, vec![]));
    assert!(s.has_client());

    // Each wake-up's read takes less than the room it had: the socket is empty, and no
    // second read asks.
    let before = s.stats().reads;
    for word in [&b"one"[..], b"two", b"three"] {
        guest.write_all(&framed(&[word])).unwrap();
        assert_eq!(read(&mut s), (ReadStatus::Open, vec![word.to_vec()]));
    }
    assert_eq!(s.stats().reads - before, 3);

    // A second client connects while the guest sends: the guest's frame first, then, once its
    // read finds nothing, the newcomer is closed.
    let mut second = UnixStream::connect(&p).unwrap();
    guest.write_all(&framed(&[b"four"])).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (status, frames) = read(&mut s);
        assert_eq!(status, ReadStatus::Open);
        got.extend(frames);
        if s.stats().refused == 1 {
            break;
        }
    }
    assert_eq!(got, [b"four".to_vec()]);
    assert_eq!(s.stats().refused, 1);
    assert!(closed_by_peer(&mut second));
    assert!(s.has_client());
}

#[test]
fn one_off_finishes_when_the_client_leaves() {
    let dir = Scratch::new();
    let p = dir.path("s");
    let mut s = QemuSocket::listen(bind_listener(&p).unwrap(), true).unwrap();
    // A probe (connects, sends nothing, leaves) doesn't count.
    let probe = UnixStream::connect(&p).unwrap();
    assert_eq!(read(&mut s).0, ReadStatus::Open);
    drop(probe);
    assert_eq!(read(&mut s).0, ReadStatus::GuestLeft(None));
    let mut c = UnixStream::connect(&p).unwrap();
    c.write_all(&framed(&[b"frame"])).unwrap();
    let mut frames = Vec::new();
    while frames.is_empty() {
        let (status, f) = read(&mut s);
        assert_eq!(status, ReadStatus::Open);
        frames.extend(f);
    }
    drop(c);
    assert_eq!(read(&mut s).0, ReadStatus::Finished(None));
}

#[test]
fn frames_split_across_writes_are_put_back_together() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut s = QemuSocket::connected(theirs.into()).unwrap();
    let big = vec![0x5au8; 3000];
    let bytes = framed(&[b"a", &big, b"bc"]);
    let mut got = Vec::new();
    // The length alone, split; then the rest in uneven pieces.
    for piece in [
        &bytes[..2],
        &bytes[2..4],
        &bytes[4..10],
        &bytes[10..2000],
        &bytes[2000..],
    ] {
        ours.write_all(piece).unwrap();
        let (status, frames) = read(&mut s);
        assert_eq!(status, ReadStatus::Open);
        got.extend(frames);
    }
    assert_eq!(got, [b"a".to_vec(), big, b"bc".to_vec()]);
}

#[test]
fn zero_and_oversize_lengths_disconnect_with_a_message() {
    for (bad, text) in [
        (
            vec![0u8, 0, 0, 0],
            "frame of length zero in the stream: disconnecting",
        ),
        (
            vec![0xff, 0xff, 0xff, 0xff],
            "frame length 4294967295 in the stream exceeds the limit of 65600: disconnecting",
        ),
    ] {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut s = QemuSocket::connected(theirs.into()).unwrap();
        let mut bytes = framed(&[b"fine"]);
        bytes.extend_from_slice(&bad);
        ours.write_all(&bytes).unwrap();
        let (status, frames) = read(&mut s);
        assert_eq!(frames, [b"fine".to_vec()]);
        assert_eq!(status, ReadStatus::Finished(Some(text.to_owned())));
        assert!(closed_by_peer(&mut ours));
    }
}

#[test]
fn a_frame_cut_short_by_the_guest_is_reported() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut s = QemuSocket::connected(theirs.into()).unwrap();
    ours.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    drop(ours);
    let (status, frames) = read_until_settled(&mut s);
    assert!(frames.is_empty());
    assert_eq!(
        status,
        ReadStatus::Finished(Some(
            "the guest closed the connection 7 bytes into a frame".to_owned()
        ))
    );
}

#[test]
fn without_a_client_frames_are_dropped() {
    let dir = Scratch::new();
    let mut s = QemuSocket::listen(bind_listener(&dir.path("s")).unwrap(), false).unwrap();
    let mut q = FrameQueue::new();
    q.push(|v| v.extend_from_slice(b"lost"));
    assert_eq!(
        s.write_frames(&q),
        WriteReport {
            sent: 0,
            dropped: 1
        }
    );
}

/// Reads and decodes everything `c` delivers until EOF.
fn drain(mut c: UnixStream) -> Vec<Vec<u8>> {
    let mut dec = StreamDecoder::new(1 << 20, MAX_FRAME);
    let mut frames = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    loop {
        let room = dec.spare();
        let n = c.read(room).expect("read within 20 s");
        if n == 0 {
            return frames;
        }
        dec.filled(n);
        while let Some(f) = dec.next_frame().expect("a clean stream") {
            frames.push(f.to_vec());
        }
    }
}

fn numbered(q: &mut FrameQueue, from: u32, count: u32, len: usize) {
    for i in from..from + count {
        q.push(|v| {
            v.extend_from_slice(&i.to_be_bytes());
            v.resize(v.len() + len - 4, (i % 251) as u8);
        });
    }
}

fn check_numbered(frames: &[Vec<u8>]) -> Vec<u32> {
    frames
        .iter()
        .map(|f| {
            let i = u32::from_be_bytes(f[..4].try_into().unwrap());
            assert!(
                f[4..].iter().all(|&b| b == (i % 251) as u8),
                "frame {i} damaged"
            );
            i
        })
        .collect()
}

#[test]
fn large_batches_arrive_whole_and_in_order() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut s = QemuSocket::connected(theirs.into()).unwrap();
    let reader = std::thread::spawn(move || drain(ours));
    let mut q = FrameQueue::new();
    numbered(&mut q, 0, 300, 60_000);
    let report = s.write_frames(&q);
    assert_eq!(
        report,
        WriteReport {
            sent: 300,
            dropped: 0
        }
    );
    drop(s);
    let frames = reader.join().unwrap();
    assert_eq!(check_numbered(&frames), (0..300).collect::<Vec<_>>());
}

#[test]
fn a_stalled_reader_loses_frames_but_never_the_framing() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut s = QemuSocket::connected(theirs.into()).unwrap();
    // Nobody reads yet: the socket fills up, the wait runs out, the rest is dropped.
    let mut q = FrameQueue::new();
    numbered(&mut q, 0, 400, 50_001);
    let first = s.write_frames(&q);
    assert!(first.dropped > 0 && first.sent > 0, "{first:?}");
    assert_eq!(s.stats().write_stalls, 1);
    // While congested, nothing waits, even after a flush with nothing to send.
    assert_eq!(s.write_frames(&FrameQueue::new()), WriteReport::default());
    let t = Instant::now();
    q.clear();
    numbered(&mut q, 1000, 10, 50_001);
    let second = s.write_frames(&q);
    assert_eq!(second.sent, 0);
    assert!(t.elapsed() < WRITE_WAIT);
    // The reader comes back: the partly sent frame is finished, and new frames flow again.
    let reader = std::thread::spawn(move || drain(ours));
    q.clear();
    numbered(&mut q, 2000, 5, 999);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut third = s.write_frames(&q);
    while third.sent == 0 && Instant::now() < deadline {
        third = s.write_frames(&q);
    }
    assert_eq!(
        third,
        WriteReport {
            sent: 5,
            dropped: 0
        }
    );
    drop(s);
    let got = check_numbered(&reader.join().unwrap());
    assert_eq!(got.len(), first.sent + 5);
    assert!(got[..first.sent].iter().copied().eq(0..first.sent as u32));
    assert_eq!(&got[first.sent..], &[2000, 2001, 2002, 2003, 2004]);
}

#[test]
fn a_client_that_left_before_it_was_noticed_makes_way_for_the_next() {
    let dir = Scratch::new();
    let p = dir.path("s");
    let mut s = QemuSocket::listen(bind_listener(&p).unwrap(), false).unwrap();
    // Both connections wait in the backlog when the socket first looks.
    let mut gone = UnixStream::connect(&p).unwrap();
    gone.write_all(&framed(&[b"last words"])).unwrap();
    drop(gone);
    let mut next = UnixStream::connect(&p).unwrap();
    assert_eq!(read(&mut s), (ReadStatus::GuestLeft(None), vec![]));
    assert_eq!(s.stats().refused, 0);
    next.write_all(&framed(&[b"hi"])).unwrap();
    assert_eq!(read(&mut s), (ReadStatus::Open, vec![b"hi".to_vec()]));
}
