//! The datagrams of the UDP runs a device handed over whole (pasta's tap with the namespace's
//! USO, a vhost-user guest's HOST_USO), cut apart for the engine, which takes datagrams
//! ([`sans_io::wire::gso::cut_udp_run`]), into one buffer per read that grows to the largest
//! read's and stays: no allocation per frame once it has.

use sans_io::wire::gso::cut_udp_run;

/// What a link made of runs of datagrams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutCounts {
    pub runs: u64,
    pub datagrams: u64,
    /// Frames that said they were runs but that could not be cut: dropped.
    pub dropped: u64,
}

impl std::ops::AddAssign for CutCounts {
    fn add_assign(&mut self, more: CutCounts) {
        self.runs += more.runs;
        self.datagrams += more.datagrams;
        self.dropped += more.dropped;
    }
}

/// The datagrams cut out of one read's runs, back to back.
#[derive(Debug, Default)]
pub struct RunCutter {
    bytes: Vec<u8>,
    /// Where each datagram's frame starts and how long it is.
    frames: Vec<(usize, usize)>,
    lens: Vec<usize>,
    counts: CutCounts,
}

impl RunCutter {
    pub fn new() -> RunCutter {
        RunCutter::default()
    }

    /// Forgets the last read's datagrams.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }

    /// Cuts `frame`, a run of datagrams of `segment_size` bytes of payload, and returns the
    /// indices of its datagrams (for [`RunCutter::frame`]), in order; `None`, counted as
    /// dropped, where it is no run that cuts.
    pub fn cut(&mut self, frame: &[u8], segment_size: u16) -> Option<std::ops::Range<usize>> {
        self.lens.clear();
        let mut at = self.bytes.len();
        if cut_udp_run(
            frame,
            usize::from(segment_size),
            &mut self.bytes,
            &mut self.lens,
        )
        .is_none()
        {
            self.counts.dropped += 1;
            return None;
        }
        self.counts.runs += 1;
        self.counts.datagrams += self.lens.len() as u64;
        let first = self.frames.len();
        for &len in &self.lens {
            self.frames.push((at, len));
            at += len;
        }
        Some(first..self.frames.len())
    }

    /// Datagram `i` of this read, as a frame.
    pub fn frame(&self, i: usize) -> &[u8] {
        let (at, len) = self.frames[i];
        &self.bytes[at..at + len]
    }

    /// What it cut since it was last asked.
    pub fn take_counts(&mut self) -> CutCounts {
        std::mem::take(&mut self.counts)
    }
}
