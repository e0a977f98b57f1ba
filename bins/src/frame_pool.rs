//! The frames of one read from a guest link that reads one frame per system call (pasta's
//! tap), in buffers allocated once; where such a frame is a run of UDP datagrams the device
//! handed over whole (the namespace's segmentation offload), the datagrams cut out of it, for
//! the engine to take in its place.

pub use os_shim::run_cutter::CutCounts;
use os_shim::run_cutter::RunCutter;

use crate::datapath::{ReadFrame, MAX_FRAME};

/// Buffers for the frames of one read from a link that reads one frame per system call,
/// allocated once: slot `i` holds frame `i` as read. A frame that was a run of UDP datagrams
/// (the namespace's segmentation offload, [`ReadFrame::udp_segment_size`]) is cut into its
/// datagrams, which the engine gets in its place.
pub struct FramePool {
    buf: Vec<u8>,
    slots: usize,
    /// The frames of the current read, in order.
    read: Vec<PoolFrame>,
    cutter: RunCutter,
}

/// Where one frame of a read lies: in its slot, or among the datagrams cut out of runs.
#[derive(Debug, Clone, Copy)]
enum PoolFrame {
    Slot { index: usize, len: usize },
    Cut(usize),
}

impl FramePool {
    /// `slots` frames of up to [`MAX_FRAME`] bytes.
    pub fn new(slots: usize) -> FramePool {
        FramePool {
            buf: vec![0; slots * MAX_FRAME],
            slots,
            read: Vec::with_capacity(slots),
            cutter: RunCutter::new(),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slot `i`'s buffer, to read frame `i` into.
    pub fn slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * MAX_FRAME..(i + 1) * MAX_FRAME]
    }

    /// Forgets the frames of the last read.
    pub(crate) fn begin(&mut self) {
        self.read.clear();
        self.cutter.clear();
    }

    /// Takes what was read into slot `index` as the read's next frame, or next datagrams.
    pub(crate) fn took(&mut self, index: usize, frame: ReadFrame) {
        let len = frame.len.min(MAX_FRAME);
        let Some(size) = frame.udp_segment_size else {
            self.read.push(PoolFrame::Slot { index, len });
            return;
        };
        let bytes = &self.buf[index * MAX_FRAME..index * MAX_FRAME + len];
        if let Some(datagrams) = self.cutter.cut(bytes, size) {
            self.read.extend(datagrams.map(PoolFrame::Cut));
        }
    }

    /// Whether the current read has no frames (yet).
    pub(crate) fn is_empty(&self) -> bool {
        self.read.is_empty()
    }

    /// The frames of the current read.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.read.iter().map(|f| match *f {
            PoolFrame::Slot { index, len } => &self.buf[index * MAX_FRAME..][..len],
            PoolFrame::Cut(i) => self.cutter.frame(i),
        })
    }

    /// What it cut since it was last asked.
    pub fn take_counts(&mut self) -> CutCounts {
        self.cutter.take_counts()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd};

    use sans_io::wire::build::{udp_frame, Route};
    use sans_io::wire::{checksum, parse, FrameQueue, MacAddr};

    use super::*;
    use crate::datapath::GuestLink;

    /// A link that reads the frames it was given, each with what its header said.
    struct Frames {
        fd: File,
        rx: VecDeque<(Vec<u8>, Option<u16>)>,
    }

    impl GuestLink for Frames {
        fn fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }

        fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<ReadFrame> {
            let (f, udp_segment_size) = self.rx.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..f.len()].copy_from_slice(&f);
            Ok(ReadFrame {
                len: f.len(),
                udp_segment_size,
            })
        }
    }

    /// An IPv4 frame carrying `payload` in one UDP datagram, as the engine builds them; with
    /// `protocol` written over UDP's in its IP header.
    fn frame(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let route = Route {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: "192.0.2.2".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
        };
        let mut queue = FrameQueue::new();
        udp_frame(&mut queue, route, 4433, 443, payload);
        let mut f = queue.get(0).unwrap().to_vec();
        f[14 + 9] = protocol;
        f[14 + 10..14 + 12].fill(0);
        let sum = checksum::of(&f[14..34]);
        f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn runs_of_datagrams_read_whole_reach_the_engine_datagram_by_datagram() {
        let payload: Vec<u8> = (0..340u32).map(|i| i as u8).collect();
        let plain = frame(17, b"alone");
        let mut link = Frames {
            fd: File::open("/dev/null").unwrap(),
            rx: VecDeque::from([
                (plain.clone(), None),
                (frame(17, &payload), Some(100)),
                // A TCP segment can't be a run of datagrams: dropped, counted.
                (frame(6, &payload), Some(100)),
                (plain.clone(), None),
            ]),
        };
        let mut pool = FramePool::new(8);
        let mut got = Vec::new();
        link.read_frames(&mut pool, 8, &mut |frames, _| {
            got.extend(frames.map(|f| f.head.to_vec()));
        })
        .unwrap();
        assert_eq!(got.len(), 6, "the plain frames and four datagrams");
        assert_eq!(got[0], plain);
        assert_eq!(got[5], plain);
        for (i, f) in got[1..5].iter().enumerate() {
            let eth = parse::ethernet(f).unwrap();
            let ip = parse::ipv4(eth.payload).unwrap();
            let udp = parse::udp(ip.payload).unwrap();
            assert_eq!((udp.src_port, udp.dst_port), (4433, 443));
            assert_eq!(udp.payload, &payload[i * 100..((i + 1) * 100).min(340)]);
        }
        assert_eq!(
            pool.take_counts(),
            CutCounts {
                runs: 1,
                datagrams: 4,
                dropped: 1
            }
        );
        // The next read starts afresh.
        link.rx.push_back((plain.clone(), None));
        let mut again = Vec::new();
        link.read_frames(&mut pool, 8, &mut |frames, _| {
            again.extend(frames.map(|f| f.head.to_vec()));
        })
        .unwrap();
        assert_eq!(again, vec![plain]);
        assert_eq!(pool.take_counts(), CutCounts::default());
    }
}
