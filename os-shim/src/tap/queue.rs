//! Writing the engine's output to the tap: a run of datagrams or TCP segments of one flow and
//! size as one write the kernel segments (see [`sans_io::wire::gso`]), every other frame as
//! it is.

use std::io;

use sans_io::wire::gso::{self, Run, Transport};
use sans_io::wire::FrameQueue;

use super::Tap;
use crate::vnet_hdr::VnetHeader;

/// Parts of one write at most: a run's headers and each of its datagrams' payloads.
pub(super) const MAX_PARTS: usize = gso::MAX_SEGMENTS + 1;

/// What [`Tap::write_queue`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames written one by one.
    pub frames: u64,
    /// Writes that carried a run of frames, and the frames they carried.
    pub runs: u64,
    pub run_frames: u64,
    /// Whether the kernel refused a run (before Linux 6.2 it doesn't segment datagrams):
    /// runs of that kind go a frame at a time since.
    pub runs_refused: bool,
    /// TCP segments read larger than the namespace's MTU (its TSO left them to us whole).
    pub segments_in: u64,
    /// Runs of UDP datagrams read as one frame (its USO), and whether the kernel took the
    /// offer of them (Linux 6.2 and later).
    pub udp_runs_in: u64,
    pub uso_offered: bool,
}

impl Tap {
    /// Writes `frames` in order; returns how many the kernel refused (each is dropped, the
    /// others still go). Frames that make a run go in one write while the kernel takes runs
    /// of their kind; one it refuses is written again frame by frame and runs of that kind
    /// stop.
    pub fn write_queue(&mut self, frames: &FrameQueue) -> usize {
        let mode = frames.l4_checksum();
        let mut dropped = 0;
        let mut i = 0;
        while i < frames.len() {
            let run = gso::run((i..frames.len()).filter_map(|j| frames.get(j)))
                .filter(|r| !self.refused.contains(&r.transport));
            if let Some(run) = run {
                match self.write_run(frames, i, &run) {
                    Ok(()) => {
                        self.stats.runs += 1;
                        self.stats.run_frames += run.frames as u64;
                        i += run.frames;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        log::info!(
                            "the tap refused a run of {} {} ({e}): this kernel doesn't \
                             segment them (Linux 6.2 does datagrams); they go one by one",
                            run.frames,
                            match run.transport {
                                Transport::Udp => "datagrams",
                                Transport::Tcp => "TCP segments",
                            }
                        );
                        self.refused.push(run.transport);
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

    /// Writes the `run` that starts at `frames[first]` as one frame.
    fn write_run(&self, frames: &FrameQueue, first: usize, run: &Run) -> io::Result<()> {
        let head = frames.get(first).unwrap_or_default();
        let last = frames.get(first + run.frames - 1).unwrap_or_default();
        let mut headers = [0u8; gso::MAX_HEADER_LEN];
        let Some(at) = gso::run_headers(head, last, run, &mut headers) else {
            // Not the run `udp_run` found: cannot be; taken as a refusal (runs stop).
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        parts[0] = &headers[..run.header_len];
        for (k, part) in parts[1..=run.frames].iter_mut().enumerate() {
            *part = &frames.get(first + k).unwrap_or_default()[run.header_len..];
        }
        let header = VnetHeader::segments(run, at);
        self.write_parts(&header, &parts[..=run.frames])
    }
}
