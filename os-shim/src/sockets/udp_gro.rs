//! Runs of datagrams received whole (`UDP_GRO`, Linux 5.0 onwards) on the engine's UDP flow
//! sockets. A peer that sends with segmentation offload (QUIC servers do), or a device that
//! merges a flow's datagrams on receipt (GRO), hands the socket one buffer of equal-sized
//! datagrams (the last maybe shorter) with their size beside it, rather than one buffer each:
//! the stack runs once for the lot, and one receive takes them all. The engine still gets
//! one datagram a slot, as [`DgramSockets::udp_recv_many`] promises, and the frames it builds
//! of them go on to the guest as runs again (pasta's tap takes a run as one write).
//!
//! A run is as large as 64 KiB, however small the engine's slots: each message of the
//! `recvmmsg` gets its slot and, after it, a spill buffer of [`SPILL`] bytes, so that nothing
//! is truncated. A plain datagram lands in its slot, as without GRO; a run's datagrams are
//! then moved into slots of their own (one copy of all but the first), in order, and what
//! the engine had no slot for this time waits in the socket's [`Pending`] for its next
//! receive (the socket is reported readable again while it holds any).
//!
//! [`DgramSockets::udp_recv_many`]: sans_io::flow::DgramSockets::udp_recv_many

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::os::fd::RawFd;

use crate::socket_sys::retry;
use crate::socket_sys::udp_gro::{
    datagrams_in as datagrams, expect_gro_control, gro_segment, GroControl,
};

/// Bytes after each message's slot for the rest of a run (or of a datagram larger than the
/// slot): a run, like any datagram, is at most 64 KiB.
pub(super) const SPILL: usize = 1 << 16;

/// Messages asked for in one `recvmmsg` at most (each with a spill buffer).
const MAX_MESSAGES: usize = 32;

/// One socket's receiving: datagrams of a run the engine had no slot for, and how many
/// datagrams a message brought last time (to ask for fewer messages when runs come).
#[derive(Debug, Default)]
pub(super) struct GroState {
    pending: Pending,
    per_message: usize,
}

impl GroState {
    /// Whether datagrams wait here for the engine's next receive.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.lens.is_empty()
    }
}

/// Datagrams received but not yet handed to the engine, in order: their bytes one after
/// the other, and their lengths.
#[derive(Debug, Default)]
pub(super) struct Pending {
    bytes: Vec<u8>,
    lens: VecDeque<usize>,
    /// Where the first one's bytes start.
    at: usize,
}

/// Held beyond this, a drained [`Pending`] gives its memory back.
const PENDING_KEPT: usize = 256 << 10;

impl Pending {
    /// Hands waiting datagrams to `slots` (see [`recv_many`]) from the first on; returns
    /// how many.
    fn serve(
        &mut self,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
    ) -> usize {
        let area = slot_len - offset;
        let mut served = 0;
        while served < lens.len() {
            let Some(len) = self.lens.pop_front() else {
                break;
            };
            let n = len.min(area);
            let to = served * slot_len + offset;
            slots[to..to + n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += len;
            lens[served] = n;
            served += 1;
        }
        if self.lens.is_empty() {
            self.at = 0;
            self.bytes.clear();
            if self.bytes.capacity() > PENDING_KEPT {
                self.bytes = Vec::new();
            }
        }
        served
    }
}

/// The spill buffers behind the slots, shared by every socket (allocated at the first
/// receive; untouched pages cost nothing).
#[derive(Debug, Default)]
pub(super) struct Spill(Vec<u8>);

/// Runs received so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroCounts {
    /// Messages that carried a run.
    pub runs: u64,
    /// The datagrams those runs held.
    pub datagrams: u64,
}

/// [`DgramSockets::udp_recv_many`] for a socket with `UDP_GRO` on: what waits in `state`
/// first, then one `recvmmsg` for the slots left, each message given its slot and a spill
/// buffer; the runs among them spread over slots of their own.
///
/// [`DgramSockets::udp_recv_many`]: sans_io::flow::DgramSockets::udp_recv_many
#[allow(clippy::too_many_arguments)]
pub(super) fn recv_many(
    fd: RawFd,
    slots: &mut [u8],
    slot_len: usize,
    offset: usize,
    lens: &mut [usize],
    state: &mut GroState,
    spill: &mut Spill,
    counts: &mut GroCounts,
) -> io::Result<usize> {
    let capacity = lens.len();
    let served = state.pending.serve(slots, slot_len, offset, lens);
    if served == capacity {
        return Ok(served);
    }
    let room = capacity - served;
    // A run fills several slots: ask for as many messages as the last ones would fill.
    let asked = (room / state.per_message.max(1)).clamp(1, room.min(MAX_MESSAGES));
    if spill.0.len() < MAX_MESSAGES * SPILL {
        spill.0 = vec![0; MAX_MESSAGES * SPILL];
    }
    let region = &mut slots[served * slot_len..];
    // SAFETY: plain old data; zero is a valid (empty) value for each.
    let mut iov: [[libc::iovec; 2]; MAX_MESSAGES] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_MESSAGES] = unsafe { std::mem::zeroed() };
    let mut controls: [GroControl; MAX_MESSAGES] = [[0; 4]; MAX_MESSAGES];
    for j in 0..asked {
        let slot = &mut region[j * slot_len + offset..(j + 1) * slot_len];
        let extra = &mut spill.0[j * SPILL..(j + 1) * SPILL];
        iov[j] = [
            libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            },
            libc::iovec {
                iov_base: extra.as_mut_ptr().cast(),
                iov_len: extra.len(),
            },
        ];
        let hdr = &mut msgs[j].msg_hdr;
        hdr.msg_iov = iov[j].as_mut_ptr();
        hdr.msg_iovlen = 2;
        expect_gro_control(hdr, &mut controls[j]);
    }
    // SAFETY: each message points at two iovecs over distinct parts of `slots` and of the
    // spill, and at its own control buffer, all of which outlive the call.
    let got = retry(|| unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            asked as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        ) as isize
    });
    let n = match got {
        Ok(n) => n,
        Err(_) if served > 0 => return Ok(served),
        Err(e) => return Err(e),
    };
    let mut messages = [(0usize, 0usize); MAX_MESSAGES];
    let mut total = 0;
    for (m, msg) in messages.iter_mut().zip(&msgs[..n]) {
        let len = msg.msg_len as usize;
        // SAFETY: the kernel filled the control buffer up to the length it set.
        let segment = unsafe { gro_segment(&msg.msg_hdr, len) };
        *m = (len, segment.unwrap_or(len));
        let count = datagrams(len, m.1);
        total += count;
        if segment.is_some() {
            counts.runs += 1;
            counts.datagrams += count as u64;
        }
    }
    let placed = spread(
        region,
        slot_len,
        offset,
        &spill.0,
        &messages[..n],
        &mut lens[served..],
        &mut state.pending,
    );
    state.per_message = total.div_ceil(n.max(1));
    Ok(served + placed)
}

/// Spreads the datagrams of `messages` (each `(length, datagram size)`, the size the length
/// itself when it is no run) over the slots of `region`: message `j` was received into slot
/// `j` (from `offset`, `slot_len - offset` bytes) and on into spill buffer `j` of `spill`.
/// Datagram `i` of them all goes to slot `i`, its length (cut to the slot, as a receive
/// truncates) into `lens[i]`; those beyond `lens.len()` go to `pending`, which must be
/// empty. Returns how many slots were filled.
///
/// Later datagrams move first: a datagram only ever moves to a later slot, so its source
/// (its own message's slot and spill) has not been written over yet.
fn spread(
    region: &mut [u8],
    slot_len: usize,
    offset: usize,
    spill: &[u8],
    messages: &[(usize, usize)],
    lens: &mut [usize],
    pending: &mut Pending,
) -> usize {
    let area = slot_len - offset;
    let capacity = lens.len();
    // Where each message's datagrams start among them all.
    let mut first = [0usize; MAX_MESSAGES + 1];
    for (j, &(len, segment)) in messages.iter().enumerate() {
        first[j + 1] = first[j] + datagrams(len, segment);
    }
    let total = first[messages.len()];
    // The parts of datagram `d` of message `j` in its slot and in its spill.
    let parts = |j: usize, d: usize| -> (Range<usize>, Range<usize>) {
        let (len, segment) = messages[j];
        let start = d * segment;
        // Cut to the slot, as a receive into it alone would have.
        let end = (start + segment).min(len).min(start + area);
        let slot = j * slot_len + offset;
        let in_slot = slot + start.min(area)..slot + end.min(area);
        let in_spill = j * SPILL + start.max(area) - area..j * SPILL + end.max(area) - area;
        (in_slot, in_spill)
    };
    // What doesn't fit waits, in order; its sources are all untouched yet.
    debug_assert!(pending.lens.is_empty());
    for (j, &(len, segment)) in messages.iter().enumerate() {
        for d in 0..datagrams(len, segment) {
            if first[j] + d < capacity {
                continue;
            }
            let (in_slot, in_spill) = parts(j, d);
            pending.bytes.extend_from_slice(&region[in_slot.clone()]);
            pending.bytes.extend_from_slice(&spill[in_spill.clone()]);
            pending.lens.push_back(in_slot.len() + in_spill.len());
        }
    }
    for (j, &(len, segment)) in messages.iter().enumerate().rev() {
        for d in (0..datagrams(len, segment)).rev() {
            let i = first[j] + d;
            if i >= capacity {
                continue;
            }
            let (in_slot, in_spill) = parts(j, d);
            let to = i * slot_len + offset;
            let n = in_slot.len();
            if in_slot.start != to {
                region.copy_within(in_slot, to);
            }
            region[to + n..to + n + in_spill.len()].copy_from_slice(&spill[in_spill.clone()]);
            lens[i] = n + in_spill.len();
        }
    }
    total.min(capacity)
}

#[cfg(test)]
mod tests;
