//! Reading captures: classic pcap (either byte order, micro- or nanosecond timestamps, as
//! `--pcap`, tcpdump and the original write them) and pcapng (as Wireshark saves), through
//! the `pcap-file` crate, from a byte slice (no reader buffering to grow on a bad length).

use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::DataLink;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its number in the file, from 1 (as tcpdump and Wireshark count).
    pub number: usize,
    /// Time since the first record.
    pub at: Duration,
    pub frame: Vec<u8>,
}

/// Why a capture can't be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file: {0}")]
    Format(String),
    #[error("link type {0:?}: only Ethernet captures (passt's and pasta's) can be replayed")]
    LinkType(DataLink),
    #[error("record {number}: {why}")]
    Record { number: usize, why: String },
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Every frame of a capture file's bytes, in file order.
pub fn read(bytes: &[u8]) -> Result<Vec<Record>, CaptureError> {
    let mut out: Vec<(Duration, Vec<u8>)> = Vec::new();
    if bytes.starts_with(&PCAPNG_MAGIC) {
        let (mut rest, mut parser) =
            PcapNgParser::new(bytes).map_err(|e| CaptureError::Format(e.to_string()))?;
        while !rest.is_empty() {
            let number = out.len() + 1;
            let (next, block) = parser.next_block(rest).map_err(|e| CaptureError::Record {
                number,
                why: e.to_string(),
            })?;
            rest = next;
            match block {
                Block::EnhancedPacket(p) => {
                    let link =
                        parser
                            .packet_interface(&p)
                            .map(|i| i.linktype)
                            .ok_or_else(|| CaptureError::Record {
                                number,
                                why: format!("unknown interface {}", p.interface_id),
                            })?;
                    if link != DataLink::ETHERNET {
                        return Err(CaptureError::LinkType(link));
                    }
                    out.push((p.timestamp, p.data.into_owned()));
                }
                Block::SimplePacket(p) => {
                    if let Some(link) = parser.interfaces().first().map(|i| i.linktype) {
                        if link != DataLink::ETHERNET {
                            return Err(CaptureError::LinkType(link));
                        }
                    }
                    let at = out.last().map(|l| l.0).unwrap_or_default();
                    out.push((at, p.data.into_owned()));
                }
                _ => {}
            }
        }
    } else {
        let (mut rest, parser) =
            PcapParser::new(bytes).map_err(|e| CaptureError::Format(e.to_string()))?;
        let link = parser.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(CaptureError::LinkType(link));
        }
        while !rest.is_empty() {
            let number = out.len() + 1;
            let (next, p) = parser.next_packet(rest).map_err(|e| CaptureError::Record {
                number,
                why: e.to_string(),
            })?;
            rest = next;
            out.push((p.timestamp, p.data.into_owned()));
        }
    }
    let start = out.first().map(|r| r.0).unwrap_or_default();
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, (at, frame))| Record {
            number: i + 1,
            at: at.saturating_sub(start),
            frame,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Direction;
    use sans_io::time::Instant;

    #[test]
    fn reads_what_the_simulator_writes() {
        let t = vec![
            (
                Instant::from_millis(5),
                Direction::GuestToEngine,
                vec![1u8; 60],
            ),
            (
                Instant::from_millis(7),
                Direction::EngineToGuest,
                vec![2u8; 42],
            ),
        ];
        let recs = read(&crate::capture::pcap(&t)).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].number, 2);
        assert_eq!(recs[1].at, Duration::from_millis(2));
        assert_eq!(recs[1].frame, vec![2u8; 42]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read(b"").is_err());
        assert!(read(b"hello world, not a capture at all").is_err());
        let mut cut = crate::capture::pcap(&vec![(
            Instant::ZERO,
            Direction::GuestToEngine,
            vec![0u8; 100],
        )]);
        cut.truncate(cut.len() - 10);
        assert!(matches!(
            read(&cut),
            Err(CaptureError::Record { number: 1, .. })
        ));
    }
}
