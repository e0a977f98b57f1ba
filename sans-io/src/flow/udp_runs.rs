//! Guest datagrams coalesced per batch of frames: the datagrams of one UDP flow in one read of
//! frames go to its socket in one [`DgramSockets::udp_send_many`] call (one `sendmmsg`), from
//! the frames they came in.
//!
//! A datagram's send changes nothing in the flow, only the counters, so the outcome is that of
//! one by one as long as every datagram goes out on its flow's socket, in order, before the
//! socket can close: the runs are written when the frames end, when they are full, and before
//! a new flow opens (which may close another to make room). When a call stops short, the
//! datagram it stopped at failed, and the rest are sent one by one, as they would have been.
//!
//! [`DgramSockets::udp_send_many`]: super::DgramSockets::udp_send_many

use super::udp::UdpCx;
use super::SockRef;

/// Datagrams queued at most, over all flows, in one batch of frames.
pub const MAX_DATAGRAMS: usize = 64;

/// The datagrams of one batch of frames waiting to be sent, borrowing the frames.
#[derive(Debug)]
pub struct DatagramRuns<'f> {
    queued: [(SockRef, &'f [u8]); MAX_DATAGRAMS],
    len: usize,
}

impl Default for DatagramRuns<'_> {
    fn default() -> Self {
        DatagramRuns {
            queued: [(SockRef(0), &[]); MAX_DATAGRAMS],
            len: 0,
        }
    }
}

impl<'f> DatagramRuns<'f> {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `datagram` for socket `s`, writing every run out first if there is no room.
    pub(super) fn queue(&mut self, cx: &mut UdpCx<'_>, s: SockRef, datagram: &'f [u8]) {
        if self.len == MAX_DATAGRAMS {
            self.write(cx);
        }
        self.queued[self.len] = (s, datagram);
        self.len += 1;
    }

    /// Sends every run, one call per socket, and counts each datagram as one by one would.
    pub fn write(&mut self, cx: &mut UdpCx<'_>) {
        let mut done = [false; MAX_DATAGRAMS];
        for first in 0..self.len {
            if done[first] {
                continue;
            }
            let s = self.queued[first].0;
            let mut run: [&[u8]; MAX_DATAGRAMS] = [&[]; MAX_DATAGRAMS];
            let mut n = 0;
            for (i, &(sock, datagram)) in self.queued[..self.len].iter().enumerate().skip(first) {
                if sock == s {
                    run[n] = datagram;
                    n += 1;
                    done[i] = true;
                }
            }
            // Stopped at `sent`: that one failed; the rest go one by one.
            let sent = cx.io.udp_send_many(s, &run[..n]).unwrap_or(0).min(n);
            cx.counters.datagrams_out += sent as u64;
            if sent < n {
                cx.counters.send_failed += 1;
                for datagram in &run[sent + 1..n] {
                    match cx.io.udp_send(s, datagram) {
                        Ok(_) => cx.counters.datagrams_out += 1,
                        Err(_) => cx.counters.send_failed += 1,
                    }
                }
            }
        }
        self.len = 0;
    }
}
