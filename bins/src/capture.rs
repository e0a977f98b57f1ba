//! `--pcap FILE`: a guest link that records every frame crossing it, both ways, with
//! [`os_shim::pcap::PcapWriter`]. Records are buffered and written once per wake-up (at
//! [`GuestLink::end_batch`]), not once per frame. A failing write (a full disk) stops the
//! capture with one warning; the data path carries on.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use os_shim::pcap::PcapWriter;
use os_shim::reactor::monotonic_now;

use crate::datapath::GuestLink;

pub struct CaptureLink<'a> {
    inner: &'a mut dyn GuestLink,
    pcap: Option<PcapWriter>,
}

impl<'a> CaptureLink<'a> {
    /// Creates (truncates) `path` and captures what crosses `inner`.
    pub fn create(inner: &'a mut dyn GuestLink, path: &Path) -> io::Result<CaptureLink<'a>> {
        let pcap = PcapWriter::create(path, monotonic_now())?;
        Ok(CaptureLink {
            inner,
            pcap: Some(pcap),
        })
    }

    fn record(&mut self, frame: &[u8]) {
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.record(monotonic_now(), frame) {
                self.stop(e);
            }
        }
    }

    fn stop(&mut self, e: io::Error) {
        log::warn!("packet capture stopped: {e}");
        self.pcap = None;
    }
}

impl GuestLink for CaptureLink<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.inner.read_frame(buf)?;
        self.record(&buf[..len]);
        Ok(len)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.inner.write_frame(frame)?;
        self.record(frame);
        Ok(())
    }

    fn end_batch(&mut self) {
        self.inner.end_batch();
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.flush() {
                self.stop(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let f = self.rx.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..f.len()].copy_from_slice(&f);
            Ok(f.len())
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
            let mut buf = [0u8; 128];
            assert_eq!(link.read_frame(&mut buf).unwrap(), 60);
            link.write_frame(&[3u8; 42]).unwrap();
            assert_eq!(link.read_frame(&mut buf).unwrap(), 70);
            assert!(link.read_frame(&mut buf).is_err());
            // Nothing but the header reaches the file before the batch ends.
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
            link.end_batch();
            assert_eq!(
                frames(&std::fs::read(&path).unwrap()),
                [vec![1u8; 60], vec![3u8; 42], vec![2u8; 70]]
            );
        }
        assert_eq!(fake.tx, [vec![3u8; 42]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
