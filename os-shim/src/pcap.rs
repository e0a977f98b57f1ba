//! `--pcap FILE`: every frame crossing the guest link, both ways, in classic pcap format
//! (readable by tcpdump and Wireshark, and by our replay tool).
//!
//! Writes go through a buffer flushed per batch of frames, so capturing costs one write(2)
//! per wake-up rather than one per frame.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sans_io::time::Instant;

/// Classic pcap magic for microsecond timestamps, version 2.4.
const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// Frames are captured whole.
const SNAPLEN: u32 = 65536 + 64;

pub struct PcapWriter {
    out: BufWriter<File>,
    /// Wall-clock time of `start`, so that records carry real timestamps.
    wall_start_us: u64,
    start: Instant,
}

impl PcapWriter {
    /// Creates (truncates) `path` and writes the file header. `now` and the wall clock at the
    /// same moment anchor the record timestamps.
    pub fn create(path: &Path, now: Instant) -> io::Result<PcapWriter> {
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes()); // GMT offset
        header.extend_from_slice(&0u32.to_ne_bytes()); // timestamp accuracy
        header.extend_from_slice(&SNAPLEN.to_ne_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&header)?;
        out.flush()?;
        let wall_start_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Ok(PcapWriter {
            out,
            wall_start_us,
            start: now,
        })
    }

    /// Appends one frame seen at `now`.
    pub fn record(&mut self, now: Instant, frame: &[u8]) -> io::Result<()> {
        let us = self.wall_start_us + (now.saturating_since(self.start).as_micros() as u64);
        let len = frame.len().min(SNAPLEN as usize) as u32;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((us / 1_000_000) as u32).to_ne_bytes());
        rec[4..8].copy_from_slice(&((us % 1_000_000) as u32).to_ne_bytes());
        rec[8..12].copy_from_slice(&len.to_ne_bytes());
        rec[12..16].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(&frame[..len as usize])
    }

    /// Pushes buffered records to the file (call after each batch).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_file_pcap_readers_accept() {
        let dir = std::env::temp_dir().join(format!("pcap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let mut w = PcapWriter::create(&path, Instant::from_millis(1000)).unwrap();
        w.record(Instant::from_millis(1000), &[1u8; 60]).unwrap();
        w.record(Instant::from_millis(1500), &[2u8; 1514]).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 60 + 16 + 1514);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), MAGIC);
        assert_eq!(
            u32::from_ne_bytes(bytes[20..24].try_into().unwrap()),
            LINKTYPE_ETHERNET
        );
        // Second record: 500 ms after the first.
        let ts = |at: usize| {
            let s = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
            let us = u32::from_ne_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as u64;
            s * 1_000_000 + us
        };
        assert_eq!(ts(24 + 16 + 60) - ts(24), 500_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
