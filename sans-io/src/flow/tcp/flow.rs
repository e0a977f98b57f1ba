//! One connection's state, how it opens, and what it asks of its socket.

use std::net::SocketAddr;
use std::time::Duration;

use super::closing::{ToGuestClose, ToHostClose};
use super::held_ack::AckHolding;
use super::seq::SeqNum;
use super::timers::{Timer, Timers};
use super::to_host::Prompt;
use super::{Cx, FlowKey, Phase, OUR_WSCALE};
use crate::config::{Config, DEFAULT_MTU};
use crate::flow::SockRef;
use crate::time::Instant;
use crate::wire::tcp::{self as wtcp, Segment};

/// The MSS a guest's SYN implies when it carries none (RFC 9293 section 3.7.1).
const DEFAULT_MSS4: u16 = 536;
const DEFAULT_MSS6: u16 = 1220;
/// The smallest segment size we use, whatever the guest asks for or the MTU allows.
const MIN_MSS: u16 = 64;

/// One connection.
#[derive(Debug)]
pub(super) struct Flow {
    pub(super) phase: Phase,
    pub(super) sock: Option<SockRef>,
    pub(super) guest: SocketAddr,
    pub(super) peer: SocketAddr,
    /// Largest payload per frame to the guest.
    pub(super) mss: u32,
    /// The MSS we advertised: the largest segment the guest sends us.
    pub(super) rcv_mss: u32,
    /// Window scale shifts in use (both zero unless both SYNs carried the option).
    pub(super) guest_ws: u8,
    pub(super) our_ws: u8,
    pub(super) guest_offered_ws: bool,

    // Guest to host.
    pub(super) rcv_nxt: SeqNum,
    /// `rcv_nxt` plus the room we last measured: no frame advertises beyond it.
    pub(super) right_edge: SeqNum,
    /// The widest window we have offered, in bytes: a sender sends a segment once half of it
    /// fits (see [`Flow::window_too_small`]).
    pub(super) max_offered: u32,
    pub(super) to_host: ToHostClose,
    /// Unwritten rest of one partially written segment: `stash[stash_at..]`.
    pub(super) stash: Vec<u8>,
    pub(super) stash_at: usize,
    /// In-order guest data was dropped for lack of room: resend-prompting ACKs are due once
    /// the socket has room.
    pub(super) starved: bool,
    /// `Writable` reports wanted, to send a window update.
    pub(super) want_wupdate: bool,
    /// `Writable` reports in a row that found no more room.
    pub(super) fruitless_writable: u8,
    /// Measurements in a row that found no more room: each waits twice as long.
    pub(super) wupdate_polls: u8,
    /// The end of the furthest out-of-order segment dropped: until `rcv_nxt` gets there, the
    /// guest has more to resend beyond whatever hole it is filling.
    pub(super) ooo_edge: Option<SeqNum>,
    /// In-order data arrived short of `ooo_edge`: the next ACK goes out with three duplicates.
    pub(super) hole_prompt: bool,
    /// The last hole prompt, until in-order data answers it.
    pub(super) prompt: Option<Prompt>,
    /// How long prompts took to be answered, smoothed (zero: not measured yet).
    pub(super) prompt_rtt: Duration,
    /// The batch's ACK goes out twice (it ends a recovery).
    pub(super) ack_twice: bool,
    /// Holding ACKs for the host's answer (see `held_ack`).
    pub(super) holding: AckHolding,

    // Host to guest.
    pub(super) iss: SeqNum,
    pub(super) snd_una: SeqNum,
    pub(super) snd_nxt: SeqNum,
    pub(super) snd_max: SeqNum,
    /// The guest's window, in bytes.
    pub(super) snd_wnd: u32,
    /// The guest's window as last given to the host socket as its window clamp.
    pub(super) host_window_clamp: Option<u32>,
    pub(super) to_guest: ToGuestClose,
    /// The last peek came up short: everything the socket holds is in flight.
    pub(super) exhausted: bool,
    pub(super) dup_acks: u8,

    // Timers.
    /// Retransmission timeouts (or handshake retries, or window probes) in a row.
    pub(super) retries: u8,
    pub(super) timers: Timers,

    // Batching.
    pub(super) dirty: bool,
    /// Segments of this flow wait in the batch's runs (see `coalesce`), the flow advanced as
    /// if they were written.
    pub(super) queued: bool,
    pub(super) ack_due: bool,
    pub(super) send_due: bool,
    /// Interest last set on the socket (readable, writable).
    pub(super) interest: (bool, bool),
}

impl Flow {
    /// A flow opening on socket `s`: nothing sent or received yet, no scaling, no timers. The
    /// two ways of opening (guest SYN, accepted host connection) set what differs.
    pub(super) fn fresh(
        phase: Phase,
        s: SockRef,
        key: FlowKey,
        mss: u32,
        iss: SeqNum,
        now: Instant,
    ) -> Flow {
        let mut f = Flow {
            phase,
            sock: Some(s),
            guest: key.guest,
            peer: key.peer,
            mss,
            rcv_mss: mss,
            guest_ws: 0,
            our_ws: 0,
            guest_offered_ws: false,
            rcv_nxt: SeqNum::default(),
            right_edge: SeqNum::default(),
            max_offered: 0,
            to_host: ToHostClose::Open,
            stash: Vec::new(),
            stash_at: 0,
            starved: false,
            want_wupdate: false,
            fruitless_writable: 0,
            wupdate_polls: 0,
            ooo_edge: None,
            hole_prompt: false,
            prompt: None,
            prompt_rtt: Duration::ZERO,
            ack_twice: false,
            holding: AckHolding::default(),
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            host_window_clamp: None,
            to_guest: ToGuestClose::Open,
            exhausted: false,
            dup_acks: 0,
            retries: 0,
            timers: Timers::default(),
            dirty: false,
            queued: false,
            ack_due: false,
            send_due: false,
            // Both off, as the driver hands connected and accepted sockets over.
            interest: (false, false),
        };
        f.touch(now);
        f
    }

    /// Takes the terms of the guest's SYN or SYN-ACK: its segment size and window scaling.
    pub(super) fn negotiate(&mut self, terms: SynTerms) {
        self.mss = terms.mss;
        self.guest_ws = terms.guest_ws;
        self.our_ws = terms.our_ws;
    }

    /// The handshake is over (the guest acknowledged our SYN with `ack`, offering `wnd`
    /// bytes): data may flow both ways, and the handshake's timers stop.
    pub(super) fn establish(&mut self, ack: SeqNum, wnd: u32, now: Instant) {
        self.phase = Phase::Established;
        self.snd_una = ack;
        self.snd_nxt = ack;
        self.snd_max = ack;
        self.snd_wnd = wnd;
        self.retries = 0;
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::PhaseEnd);
        self.touch(now);
        self.send_due = true;
    }

    pub(super) fn stash_len(&self) -> usize {
        self.stash.len() - self.stash_at
    }

    pub(super) fn in_flight(&self) -> u32 {
        self.snd_nxt.since(self.snd_una)
    }

    /// Bytes of data in flight (not counting a FIN).
    pub(super) fn data_in_flight(&self) -> u32 {
        let f = self.in_flight();
        match self.fin_seq() {
            Some(fin) if self.snd_nxt == fin + 1 => f.saturating_sub(1),
            _ => f,
        }
    }

    /// The readiness the socket should report, (readable, writable), for what the flow can
    /// use now. Input is wanted whenever the guest's window has room, also while what the
    /// socket held is all in flight: a driver reports only input no peek has seen yet, and
    /// waiting for the guest's next ACK to look again held host data back as long as the
    /// guest delays its ACKs (tens of ms, a sender's round trip each time).
    pub(super) fn wanted_interest(&self) -> (bool, bool) {
        let established = self.phase == Phase::Established;
        let flight = self.data_in_flight();
        // Nothing more to read once the end of stream is seen.
        let readable = established && self.to_guest == ToGuestClose::Open && flight < self.snd_wnd;
        let writable = established && (self.stash_len() > 0 || self.starved || self.want_wupdate);
        (readable, writable)
    }
}

/// What the guest's SYN or SYN-ACK asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct SynTerms {
    /// The largest payload per frame to the guest: what it asked for, at most `ours`.
    pub(super) mss: u32,
    /// Window scale shifts in use: both zero unless the guest offered scaling.
    pub(super) guest_ws: u8,
    pub(super) our_ws: u8,
    pub(super) offered_ws: bool,
}

impl SynTerms {
    /// The terms of the guest's SYN (or SYN-ACK) `seg`, `ours` being the largest segment we
    /// carry.
    pub(super) fn of(seg: &Segment<'_>, v6: bool, ours: u32) -> SynTerms {
        let opts = wtcp::syn_options(seg.options);
        let default_mss = if v6 { DEFAULT_MSS6 } else { DEFAULT_MSS4 };
        let (guest_ws, our_ws) = match opts.wscale {
            Some(ws) => (ws, OUR_WSCALE),
            None => (0, 0),
        };
        SynTerms {
            mss: u32::from(opts.mss.unwrap_or(default_mss)).clamp(u32::from(MIN_MSS), ours),
            guest_ws,
            our_ws,
            offered_ws: opts.wscale.is_some(),
        }
    }
}

/// The MSS our MTU allows for a family.
pub fn mss_for(config: &Config, v6: bool) -> u16 {
    let mtu = config.mtu.filter(|&m| m > 0).unwrap_or(DEFAULT_MTU);
    let overhead = if v6 { 60 } else { 40 };
    mtu.saturating_sub(overhead).max(MIN_MSS)
}

/// Tells the driver when the readiness the flow wants changed (not before the socket is
/// connected).
pub(super) fn update_interest(cx: &mut Cx<'_>, f: &mut Flow) {
    let Some(s) = f.sock else { return };
    if f.phase == Phase::Connecting {
        return;
    }
    let want = f.wanted_interest();
    if want != f.interest {
        cx.io.set_interest(s, want.0, want.1);
        f.interest = want;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An established IPv4 flow with a 64 KiB window offered and 10,000 bytes of the guest's.
    pub(in super::super) fn flow() -> Flow {
        let key = FlowKey {
            guest: "192.0.2.2:1".parse().unwrap(),
            peer: "192.0.2.1:2".parse().unwrap(),
        };
        let mut f = Flow::fresh(
            Phase::Established,
            SockRef(1),
            key,
            1460,
            SeqNum::default(),
            Instant::ZERO,
        );
        f.our_ws = 8;
        f.guest_offered_ws = true;
        f.rcv_nxt = SeqNum::from(1000);
        f.set_right_edge(SeqNum::from(1000 + 65536));
        f.snd_una = SeqNum::from(1);
        f.snd_nxt = SeqNum::from(1);
        f.snd_max = SeqNum::from(1);
        f.snd_wnd = 10_000;
        f
    }

    #[test]
    fn readable_interest_follows_window_and_flight() {
        let mut f = flow();
        assert_eq!(f.wanted_interest(), (true, false));
        // Everything the socket held in flight, room in the window: what comes next is
        // wanted now, not at the guest's next ACK.
        f.snd_nxt = SeqNum::from(101);
        f.exhausted = true;
        assert_eq!(f.wanted_interest(), (true, false));
        // Window full.
        f.exhausted = false;
        f.snd_nxt = SeqNum::from(1 + 10_000);
        assert_eq!(f.wanted_interest(), (false, false));
        // Stash waiting for room.
        f.snd_nxt = SeqNum::from(1);
        f.stash = vec![1, 2, 3];
        assert_eq!(f.wanted_interest(), (true, true));
        // End of stream seen: nothing more to read.
        f.to_guest = ToGuestClose::Eof;
        assert_eq!(f.wanted_interest(), (false, true));
    }
}
