//! `--pcap FILE`: a guest link that records every frame crossing it, both ways, with
//! [`os_shim::pcap::PcapWriter`]. Records are buffered and written once per batch of frames
//! read or written, not once per frame. A failing write (a full disk) stops the capture with
//! one warning; the data path carries on.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use os_shim::pcap::PcapWriter;
use os_shim::reactor::monotonic_now;

use sans_io::wire::external::{ExternalPayloads, GuestFrame};
use sans_io::wire::offload::{finish_partial_checksum, left_partial, L4Checksum};
use sans_io::wire::FrameQueue;

use crate::datapath::{FramePool, GuestLink, LinkStatus, OnFrames};

pub struct CaptureLink<'a> {
    inner: &'a mut dyn GuestLink,
    pcap: Option<PcapWriter>,
    /// A frame whose checksum the capture finishes (the device would have).
    scratch: Vec<u8>,
    /// A frame whose payload the link left in the guest's memory, put together.
    whole: Vec<u8>,
}

impl<'a> CaptureLink<'a> {
    /// Creates (truncates) `path` and captures what crosses `inner`.
    pub fn create(inner: &'a mut dyn GuestLink, path: &Path) -> io::Result<CaptureLink<'a>> {
        let pcap = PcapWriter::create(path, monotonic_now())?;
        Ok(CaptureLink {
            inner,
            pcap: Some(pcap),
            scratch: Vec::new(),
            whole: Vec::new(),
        })
    }

    /// Writes what the batch recorded.
    fn flush(&mut self) {
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.flush() {
                self.stop(e);
            }
        }
    }

    fn stop(&mut self, e: io::Error) {
        log::warn!("packet capture stopped: {e}");
        self.pcap = None;
    }
}

/// All of `frame`: its head, or (a frame whose rest a link left in place) head and rest copied
/// together into `whole`.
fn put_together<'w>(
    whole: &'w mut Vec<u8>,
    frame: &GuestFrame<'w>,
    external: &dyn ExternalPayloads,
) -> &'w [u8] {
    let Some(rest) = frame.rest else {
        return frame.head;
    };
    whole.clear();
    whole.extend_from_slice(frame.head);
    whole.resize(frame.head.len() + rest.len, 0);
    let got = external.read(rest, &mut whole[frame.head.len()..]);
    whole.truncate(frame.head.len() + got);
    whole
}

/// Records `frame`, its transport checksum finished first (in `scratch`) when `partial`.
fn record_finished(
    pcap: &mut PcapWriter,
    scratch: &mut Vec<u8>,
    frame: &[u8],
    partial: bool,
) -> io::Result<()> {
    if !partial {
        return pcap.record(monotonic_now(), frame);
    }
    scratch.clear();
    scratch.extend_from_slice(frame);
    finish_partial_checksum(scratch);
    pcap.record(monotonic_now(), scratch)
}

impl GuestLink for CaptureLink<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd()
    }

    fn read_frames(
        &mut self,
        pool: &mut FramePool,
        max: usize,
        on_frames: &mut OnFrames<'_>,
    ) -> io::Result<LinkStatus> {
        let pcap = &mut self.pcap;
        let (scratch, whole) = (&mut self.scratch, &mut self.whole);
        let mut failed = None;
        let status = self.inner.read_frames(pool, max, &mut |frames, external| {
            on_frames(
                &mut frames.inspect(|frame| {
                    if let Some(p) = pcap.as_mut().filter(|_| failed.is_none()) {
                        let frame = put_together(whole, frame, external);
                        // A guest's kernel leaves checksums to a link that finishes them: the
                        // capture shows them finished, as the far end sees them.
                        if let Err(e) = record_finished(p, scratch, frame, left_partial(frame)) {
                            failed = Some(e);
                        }
                    }
                }),
                external,
            );
        });
        if let Some(e) = failed {
            self.stop(e);
        }
        self.flush();
        status
    }

    fn l4_checksum(&self) -> L4Checksum {
        self.inner.l4_checksum()
    }

    fn summary(&self) -> Option<String> {
        self.inner.summary()
    }

    fn write_frames(&mut self, frames: &FrameQueue) -> usize {
        let dropped = self.inner.write_frames(frames);
        let mode = frames.l4_checksum();
        if let Some(p) = &mut self.pcap {
            for frame in frames.iter() {
                // What the guest got once its kernel finished the checksum.
                let partial = mode.left_at(frame).is_some();
                if let Err(e) = record_finished(p, &mut self.scratch, frame, partial) {
                    self.stop(e);
                    break;
                }
            }
        }
        self.flush();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::ReadFrame;
    use std::collections::VecDeque;
    use std::fs::File;
    use std::os::fd::AsFd;

    /// A guest link with frames to read and a record of frames written.
    struct Fake {
        fd: File,
        rx: VecDeque<Vec<u8>>,
        tx: Vec<Vec<u8>>,
    }

    impl GuestLink for Fake {
        fn fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
        fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<ReadFrame> {
            let f = self.rx.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..f.len()].copy_from_slice(&f);
            Ok(ReadFrame::whole(f.len()))
        }
        fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
            self.tx.push(frame.to_vec());
            Ok(())
        }
    }

    /// The frames of a pcap file, in order.
    fn frames(file: &[u8]) -> Vec<Vec<u8>> {
        let mut at = 24;
        let mut out = Vec::new();
        while at < file.len() {
            let len = u32::from_ne_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
            out.push(file[at + 16..at + 16 + len].to_vec());
            at += 16 + len;
        }
        out
    }

    #[test]
    fn records_both_ways_in_order_and_writes_per_batch() {
        let dir = std::env::temp_dir().join(format!("capture-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.pcap");
        let mut fake = Fake {
            fd: File::open("/dev/null").unwrap(),
            rx: VecDeque::from([vec![1u8; 60], vec![2u8; 70]]),
            tx: Vec::new(),
        };
        {
            let mut link = CaptureLink::create(&mut fake, &path).unwrap();
            let mut pool = FramePool::new(8);
            let mut seen = Vec::new();
            link.read_frames(&mut pool, 8, &mut |frames, _| {
                seen.push(frames.map(|f| f.len()).collect::<Vec<_>>())
            })
            .unwrap();
            assert_eq!(seen, [[60, 70]], "both frames handed over at once");
            // One write for the batch read: both frames are in the file now.
            assert_eq!(
                frames(&std::fs::read(&path).unwrap()),
                [vec![1u8; 60], vec![2u8; 70]]
            );
            let mut out = FrameQueue::new();
            out.push(|b| b.extend_from_slice(&[3u8; 42]));
            assert_eq!(link.write_frames(&out), 0);
            assert_eq!(
                frames(&std::fs::read(&path).unwrap()),
                [vec![1u8; 60], vec![2u8; 70], vec![3u8; 42]]
            );
        }
        assert_eq!(fake.tx, [vec![3u8; 42]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
