//! Writing the engine's output to the tap: a run of datagrams of one flow and size as one
//! write the kernel segments (see [`sans_io::wire::uso`]), every other frame as it is.

use std::io;

use sans_io::wire::uso::{self, UdpRun};
use sans_io::wire::FrameQueue;

use super::vnet::VnetHeader;
use super::Tap;

/// Parts of one write at most: a run's headers and each of its datagrams' payloads.
pub(super) const MAX_PARTS: usize = uso::MAX_SEGMENTS + 1;

/// What [`Tap::write_queue`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames written one by one.
    pub frames: u64,
    /// Writes that carried a run of datagrams, and the datagrams they carried.
    pub runs: u64,
    pub run_datagrams: u64,
    /// Whether the kernel refused a run (before Linux 6.2 it doesn't know the offload): runs
    /// go one datagram at a time since.
    pub runs_refused: bool,
    /// TCP segments read larger than the namespace's MTU (its TSO left them to us whole).
    pub segments_in: u64,
}

impl Tap {
    /// Writes `frames` in order; returns how many the kernel refused (each is dropped, the
    /// others still go). Datagrams that make a run go in one write while the kernel takes
    /// them so; one it refuses is written again frame by frame and runs stop.
    pub fn write_queue(&mut self, frames: &FrameQueue) -> usize {
        let mode = frames.l4_checksum();
        let mut dropped = 0;
        let mut i = 0;
        while i < frames.len() {
            let run = match self.segmenting {
                true => uso::udp_run((i..frames.len()).filter_map(|j| frames.get(j))),
                false => None,
            };
            if let Some(run) = run {
                match self.write_run(frames, i, &run) {
                    Ok(()) => {
                        self.stats.runs += 1;
                        self.stats.run_datagrams += run.frames as u64;
                        i += run.frames;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        log::info!(
                            "the tap refused a run of {} datagrams ({e}): this kernel \
                             doesn't segment them (Linux 6.2 does); they go one by one",
                            run.frames
                        );
                        self.segmenting = false;
                        self.stats.runs_refused = true;
                        // The run's frames go one by one below.
                    }
                    Err(_) => {
                        // The device is down or gone: what the run carried is lost.
                        dropped += run.frames;
                        i += run.frames;
                        continue;
                    }
                }
            }
            let frame = frames.get(i).unwrap_or_default();
            let header = match mode.left_at(frame) {
                Some(at) => VnetHeader::partial_checksum(at),
                None => VnetHeader::default(),
            };
            match self.write_parts(&header, &[frame]) {
                Ok(()) => self.stats.frames += 1,
                Err(_) => dropped += 1,
            }
            i += 1;
        }
        dropped
    }

    /// Writes the `run` of datagrams that starts at `frames[first]` as one frame.
    fn write_run(&self, frames: &FrameQueue, first: usize, run: &UdpRun) -> io::Result<()> {
        let head = frames.get(first).unwrap_or_default();
        let mut headers = [0u8; uso::MAX_HEADER_LEN];
        let Some(at) = uso::run_headers(head, run, &mut headers) else {
            // Not the run `udp_run` found: cannot be; taken as a refusal (runs stop).
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        parts[0] = &headers[..run.header_len];
        for (k, part) in parts[1..=run.frames].iter_mut().enumerate() {
            *part = &frames.get(first + k).unwrap_or_default()[run.header_len..];
        }
        let header = VnetHeader::udp_segments(run.header_len, run.segment_size, at);
        self.write_parts(&header, &parts[..=run.frames])
    }
}
