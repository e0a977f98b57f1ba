//! TCP translation: guest connections to host sockets and back, without buffering.
//!
//! # Theory of operation
//!
//! We are not a TCP stack. The guest runs one, the host kernel runs another, and a flow is
//! the seam between a guest connection and a host socket. Each side's own stack keeps the
//! data, retransmits it and paces it; we only translate sequence numbers and keep both ends
//! honest about what the other has really got. Nothing is copied into memory of ours on the
//! way, with one bounded exception (the *stash*, below).
//!
//! ## Guest to host
//!
//! An in-order guest segment's payload is handed to `StreamSockets::send` straight from the
//! frame it arrived in; the consecutive segments of a flow in one read of frames go together,
//! in one `StreamSockets::send_vectored` (`coalesce`, with the outcome of one by one). We acknowledge it to the guest only once the kernel has taken it, so
//! the guest keeps every byte the host hasn't accepted and retransmits it if need be. A
//! segment that starts beyond what we expect is not kept: the guest gets a duplicate ACK at
//! once (three of them trigger its fast retransmit). Old or overlapping segments are trimmed
//! to their new part; keepalive probes (one byte, or none, just before what we expect) are
//! answered with an ACK.
//!
//! **Holes.** Dropping out-of-order data means that after one loss, everything the guest sent
//! beyond it is lost too, and a guest without SACK or NewReno (smoltcp; Linux with several
//! holes) resends one segment per fast retransmit: once it has filled the first hole, nothing
//! it sends makes three duplicate ACKs, and each further segment would cost a retransmission
//! timeout (backed off, for some guests, ever longer). So we keep how far the dropped data
//! went (`ooo_edge`), and while the guest's resent data arrives short of it (*recovering*):
//! - the batch's ACK goes out followed by three duplicates (a *hole prompt*, the trick the
//!   stash uses, below): the guest resends the next segment at once;
//! - the right edge is held where it was, so that new data, which we would only drop and
//!   have resent one segment at a time, waits until the holes are filled;
//! - a prompt (or, for the first hole, the duplicate ACKs that should have made the guest
//!   resend it) not answered within twice the time prompts take (1 to 100 ms), because the
//!   resent segment or our ACKs were lost, is repeated a few times, waiting twice as long each
//!   time, as a window update (the edge moved by one unit) and three duplicates: a guest
//!   counts duplicates only after an ACK that told it something.
//!
//! The ACK that ends a recovery reopens the window, and the guest has nothing else in flight
//! to make up for its loss: it goes out twice. A link that neither loses nor reorders drops
//! nothing, and none of this happens (`TcpCounters::hole_prompts`, `prompt_repeats`).
//!
//! The window we advertise is the room the socket's send buffer has (`send_space`),
//! scaled, never more: we keep a *right edge* (`rcv_nxt` + the room we last measured) and every
//! frame advertises up to that edge and no further, so a guest that respects its window should
//! never send more than the kernel takes. The room is measured once per batch, when the flow's
//! ACK goes out from [`Tcp::flush`]. When the window we advertise is too small for one of the
//! guest's segments, the guest waits for an update (or probes, 200 ms and more later), so we
//! listen for `Writable` until the room grows, and send the update at once. A `Writable` that
//! finds no more room keeps us listening; since readiness is level-triggered and the kernel's
//! idea of writable is not our idea of room, a second one in a row turns listening into
//! measuring the room every [`WUPDATE_POLL`], backing off to [`WUPDATE_POLL_MAX`] while the
//! peer reads nothing, until it grows. A window is too small only when the guest's data has
//! filled it (less than half the widest window we offered is left, or less than a segment):
//! a window that a small send buffer keeps below one segment forever, as on a fresh socket,
//! doesn't stop a sender, and an idle flow is never measured at all.
//!
//! **The stash**, the one exception to "no buffering": when the kernel takes only part of a
//! segment (its accounting is not exactly ours), the unwritten rest of *that one segment* is
//! kept in a per-flow buffer, allocated on first need and reused, at most one segment long. We
//! acknowledge the whole segment, advertise the window minus the stash, ask for `Writable`, and
//! write the stash first when the socket has room. This recovers from a partial write without
//! waiting for the guest's fast retransmit, which is what made the C original collapse when the
//! send buffer filled. Guest data arriving while the stash can't be flushed is dropped
//! unacknowledged (counted); once the stash is written, a window update and three duplicate
//! ACKs make the guest resend it at once. A guest FIN is passed on (`shutdown_write`) only
//! after the stash is written.
//!
//! ## Host to guest
//!
//! Host data stays in the socket's receive queue until the guest acknowledges it. On
//! `Readable`, and whenever the guest's ACKs open its window, we peek the socket at offset
//! `snd_nxt - snd_una` (the bytes already in flight) straight into the payload area of a frame
//! being built in the [`FrameQueue`], up to one MSS and what is left of the guest's window,
//! write the headers around it, and go on while data and window last. An ACK from the guest
//! discards the acknowledged bytes from the socket. Retransmission is a rewind: on the
//! retransmission timer (1 s, doubling) or three duplicate ACKs, `snd_nxt` goes back to
//! `snd_una` and the same bytes are peeked again. After [`MAX_RETRIES`] unanswered timeouts
//! both sides are reset.
//!
//! Readiness is level-triggered over what no peek has seen (see `flow`'s driver contract): a
//! socket holding only bytes in flight to the guest is not readable, and new bytes are reported
//! as they arrive. Readable interest is off only while the guest's window is full: new host
//! data goes to the guest as it comes, not at the guest's next ACK, which a guest delaying its
//! ACKs would hold back by tens of milliseconds (and a remote sender's round trips with it).
//!
//! ## Closing
//!
//! `PeerClosed`, or a peek whose answer says `eof`, means the host side hit end of stream (a
//! short peek alone doesn't). Our FIN to the guest follows the last byte: it is sent once a
//! peek comes up short after the end of stream is known, or, when a peek says the end follows
//! the bytes it copied, on the frame of the last of them (one frame, not two, for a server
//! that answers and closes); it takes a sequence number, and is retransmitted like data
//! (with the last bytes again, if they went together) until acknowledged. A guest FIN is
//! acknowledged, and passed on with `shutdown_write` once every byte before it is written.
//! Either direction can keep going after the other's FIN. When both
//! FINs are acknowledged the socket is closed and the flow lingers for [`TIME_WAIT`] to
//! acknowledge a retransmitted last FIN. A guest RST aborts the socket; a socket error sends the
//! guest a RST (a refused connect at once; the attempt, by the guest's 4-tuple and initial
//! sequence number, is remembered for [`TOMBSTONE_TIME`], so that a retransmission of its SYN
//! which crossed our RST gets another RST instead of opening a second host connect).
//! Timeouts: handshakes (SYN and SYN-ACK retried 1, 2, 4, 8 s), [`FIN_TIMEOUT`] once both FINs
//! are out, [`ACT_TIMEOUT`] of inactivity.
//!
//! ## Batching
//!
//! Guest frames and socket events only mark flows "ACK due" or "send due"; [`Tcp::flush`],
//! which ends each of the engine's batches, sends one ACK per flow, measuring the window once.
//! Until it runs, [`Tcp::poll_timeout`] reports the time of the last event (a flush stopped at
//! the queue's budget leaves the rest to the timer that way).
//!
//! ## States
//!
//! [`Phase`]: `Connecting` (guest SYN seen, host connect in progress), `SynAckSent` (host
//! connected, our SYN-ACK awaits the guest's ACK), `SynSent` (accepted host connection, our
//! SYN awaits the guest's SYN-ACK), `Established`, `TimeWait` (socket closed, key kept
//! briefly). Closing is not more phases but one state per direction (`closing`): guest to
//! host `Open`, `FinReceived` (the stash still holds bytes before the FIN), `Shut`; host to
//! guest `Open`, `Eof` (end of stream seen, bytes before it still to send), `FinAt` (our
//! FIN's sequence number), `FinAcked`.
//!
//! ## Where things are
//!
//! One file per mechanism: `flow` (a flow's state, the terms of the SYNs, `establish`),
//! `handshake` (opening both ways), `held_ack` (an ACK waiting for the host's answer to carry
//! it), `tombstones` (reset attempts remembered), `seq` (sequence numbers), `to_host` (guest
//! data, the stash, hole prompts), `coalesce` (a read's segments of a flow written together),
//! `to_guest` (host data, ACKs from the guest, retransmission), `window` (the window we offer
//! and its updates), `closing`, `timers` (one table of a flow's timers, and what each does
//! when it fires), `emit` (control frames). This file holds the table of flows and dispatches
//! segments, socket events and the batch's flush to them.

mod closing;
mod coalesce;
mod emit;
mod flow;
mod handshake;
mod held_ack;
mod seq;
mod timers;
mod to_guest;
mod to_host;
mod tombstones;
mod window;

use std::net::{IpAddr, SocketAddr};
use std::ops::{ControlFlow, RangeInclusive};
use std::time::Duration;

use self::closing::{finish_check, ToGuestClose};
use self::coalesce::RunSlot;
pub use self::coalesce::{SendRuns, MAX_QUEUED};
use self::emit::{emit, rst_reply, send_ack};
pub use self::flow::mss_for;
use self::flow::{update_interest, Flow};
use self::handshake::{
    connecting_segment, on_connected, on_socket_error, syn_ack_sent_segment, syn_sent_segment,
};
use self::held_ack::hold_ack;
pub use self::held_ack::{ACK_HOLD, HOLD_GRAIN, HOLD_MAX_BYTES, MAX_WAIT_SHIFT};
use self::seq::SegmentSeq;
use self::timers::Timer;
use self::to_guest::{on_ack, send_data};
use self::to_host::{guest_data, StashBudget};
use self::tombstones::Tombstones;
use self::window::{on_writable, refresh_window};
use super::table::{FlowTable, KeyedHash};
use super::{unicast, SockEvent, SockRef, StreamSockets};
use crate::config::Config;
use crate::fwd::forwards::Forwards;
use crate::guest::GuestState;
use crate::rng::Rng;
use crate::time::Instant;
use crate::wire::external::ExternalPayloads;
use crate::wire::tcp::{flags, Segment};
use crate::wire::FrameQueue;

/// Flows at most, by default.
pub const DEFAULT_MAX_FLOWS: usize = 65536;
/// The default ephemeral port range (Linux's `ip_local_port_range`): not forwarded by `all`.
pub const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;
/// The window scale we offer: windows up to 16 MiB.
pub const OUR_WSCALE: u8 = 8;
/// First retransmission timeout; it doubles on each retry, up to [`RTO_MAX`].
pub const RTO_INITIAL: Duration = Duration::from_secs(1);
pub const RTO_MAX: Duration = Duration::from_secs(60);
/// Retransmission timeouts without progress before both sides are reset.
pub const MAX_RETRIES: u8 = 8;
/// Handshake retries (our SYN or SYN-ACK to the guest) before giving up.
pub const SYN_RETRIES: u8 = 4;
/// How long a host connect may take before we give up (the kernel's own limit is ~127 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(130);
/// Once FINs went both ways, how long the last ACKs may take.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Inactivity before an established connection is reset (the original's 2 hours).
pub const ACT_TIMEOUT: Duration = Duration::from_secs(7200);
/// How long a closed flow lingers to re-acknowledge a retransmitted last FIN.
pub const TIME_WAIT: Duration = Duration::from_secs(2);
/// How long a connection attempt we reset (host connect refused or timed out) is remembered,
/// so that a retransmission of its SYN gets a RST rather than another host connect.
pub const TOMBSTONE_TIME: Duration = Duration::from_secs(3);
/// Such attempts remembered at most; beyond, the oldest is forgotten.
pub const MAX_TOMBSTONES: usize = 256;
/// Duplicate ACKs that trigger a fast retransmit.
pub const DUP_ACK_THRESHOLD: u8 = 3;
/// A hole prompt (see the module documentation) not answered within twice the time prompts
/// lately took to be answered, bounded by these, is repeated, waiting twice as long each time.
pub const PROMPT_WAIT_MIN: Duration = Duration::from_millis(1);
pub const PROMPT_WAIT_MAX: Duration = Duration::from_millis(100);
/// Repeats of one hole prompt at most; beyond, the guest's own retransmission timer fills it.
pub const PROMPT_RETRIES: u8 = 5;
/// How often the room is measured while the guest waits for a window and `Writable` reports
/// keep coming without room (see the module documentation).
pub const WUPDATE_POLL: Duration = Duration::from_millis(2);
/// The longest wait between such measurements while the room doesn't grow (the guest's own
/// window probes, 200 ms and more apart, come on top).
pub const WUPDATE_POLL_MAX: Duration = Duration::from_millis(256);
/// Stash buffers in use at most, over all flows; beyond, partial writes fall back to
/// acknowledging only what was written.
pub const MAX_STASHES: usize = 4096;
/// Bytes of frames queued per call before flows wait for the next round (the driver drains
/// the queue in between): bounds the queue, not the throughput.
pub const OUT_BUDGET: usize = 8 << 20;

/// What the TCP translation did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Flows in the table now (including lingering closed ones).
    pub flows: u64,
    /// Outbound connections started (guest SYN, host connect issued).
    pub opened: u64,
    /// Inbound connections accepted and forwarded to the guest.
    pub accepted: u64,
    /// Host connects that failed (refused, unreachable, timed out).
    pub connect_refused: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Connections refused because the flow table was full.
    pub table_full: u64,
    /// Retransmitted SYNs of connection attempts already reset: reset again, no connect.
    pub stale_syns: u64,
    /// Retransmissions to the guest (timeouts and fast retransmits).
    pub retransmissions: u64,
    pub fast_retransmits: u64,
    /// Partial writes whose rest went to the stash.
    pub stash_uses: u64,
    /// Partial writes with no stash buffer available (acknowledged only what was written).
    pub stash_unavailable: u64,
    /// In-order guest segments dropped unacknowledged: no room in the socket.
    pub no_room_drops: u64,
    /// Guest segments beyond what we expected (answered with a duplicate ACK).
    pub out_of_order: u64,
    /// In-order guest data that filled a hole with more dropped beyond it, acknowledged with
    /// three duplicate ACKs to prompt the guest's next fast retransmit.
    pub hole_prompts: u64,
    /// Hole prompts repeated because the hole stayed (the resent segment or our ACKs lost).
    pub prompt_repeats: u64,
    /// ACKs for guest data held for the host's answer, which carried them (see `held_ack`).
    pub acks_carried: u64,
    /// ACKs held for an answer that didn't come in time, sent alone.
    pub acks_held_out: u64,
    /// Flows reset for a timeout (handshake, retransmission, inactivity, FIN).
    pub timeouts: u64,
    /// Connections accepted on a port that isn't forwarded, or whose guest flow clashes.
    pub unforwarded: u64,
    /// Connections from a local peer handed over to the driver's loopback bypass (pasta).
    pub handed_over: u64,
    /// Guest TCP frames dropped because TCP is disabled.
    pub disabled_drops: u64,
    /// Payload bytes written to host sockets.
    pub bytes_to_host: u64,
    /// New payload bytes sent to the guest (not counting retransmissions).
    pub bytes_to_guest: u64,
}

/// What the TCP code needs from the engine for one call.
pub struct Cx<'a> {
    pub now: Instant,
    /// Where guest payload a link left in place is (see [`crate::wire::external`]).
    pub external: &'a dyn ExternalPayloads,
    pub config: &'a Config,
    pub forwards: &'a Forwards,
    pub guest: &'a GuestState,
    pub rng: &'a mut Rng,
    pub io: &'a mut dyn StreamSockets,
    pub out: &'a mut FrameQueue,
    pub counters: &'a mut TcpCounters,
}

/// A flow as the guest names it: its own end and the peer it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub guest: SocketAddr,
    pub peer: SocketAddr,
}

/// Where a connection is in its life; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    SynAckSent,
    SynSent,
    Established,
    TimeWait,
}

/// What to do with a flow after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Keep,
    /// Reset: the socket is aborted, the guest gets a RST if asked, the flow goes.
    Abort {
        rst_guest: bool,
    },
    /// Both directions finished: close the socket gracefully, linger in TIME_WAIT.
    Finish,
    /// Forget the flow (TIME_WAIT over, or replaced); the socket is already closed.
    Free,
}

/// The TCP translation's state: every flow, its timers, the batch's pending work.
pub struct Tcp {
    table: FlowTable<FlowKey, Flow>,
    /// Flows with work for [`Tcp::flush`].
    dirty: Vec<u32>,
    /// Scratch lists, reused.
    dirty_spare: Vec<u32>,
    scratch: Vec<u32>,
    stashes: StashBudget,
    /// When work became pending for [`Tcp::flush`].
    pending_since: Option<Instant>,
    tombstones: Tombstones,
}

impl Tcp {
    pub fn new(max_flows: usize, hash: KeyedHash) -> Tcp {
        Tcp {
            table: FlowTable::new(max_flows, hash),
            dirty: Vec::new(),
            dirty_spare: Vec::new(),
            scratch: Vec::new(),
            stashes: StashBudget::default(),
            pending_since: None,
            tombstones: Tombstones::default(),
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The phase of the flow the guest names `key`, if any (for tests and debugging).
    pub fn phase(&self, key: &FlowKey) -> Option<Phase> {
        self.table
            .by_key(key)
            .and_then(|i| self.table.get(i))
            .map(|f| f.phase)
    }

    /// The next time [`Tcp::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.table.next_deadline(), self.pending_since]
            .into_iter()
            .flatten()
            .min()
    }

    fn mark(&mut self, idx: u32, cx: &Cx<'_>) {
        if let Some(f) = self.table.get_mut(idx) {
            if !f.dirty {
                f.dirty = true;
                self.dirty.push(idx);
            }
            self.pending_since.get_or_insert(cx.now);
        }
    }

    // --- Guest segments ---

    /// A TCP segment from the guest, `src` to `dst` (already past IP checks). With `runs`,
    /// its in-order data may wait there to be written with its flow's run (see `coalesce`):
    /// the caller then writes them out with [`Tcp::write_runs`] before the frames go.
    pub fn handle_segment<'f>(
        &mut self,
        cx: &mut Cx<'_>,
        src: IpAddr,
        dst: IpAddr,
        seg: &Segment<'f>,
        mut runs: Option<&mut SendRuns<'f>>,
    ) {
        if !cx.config.protocols.tcp {
            cx.counters.disabled_drops += 1;
            return;
        }
        let key = FlowKey {
            guest: SocketAddr::new(src, seg.src_port),
            peer: SocketAddr::new(dst, seg.dst_port),
        };
        let mut found = self.table.by_key(&key);
        if let (Some(runs), Some(idx)) = (runs.as_deref_mut(), found) {
            if self.settle_run(cx, runs, idx, seg) {
                // Its run's write may have ended the flow.
                found = self.table.by_key(&key);
            }
        }
        let Some(idx) = found else {
            if seg.has(flags::RST) || !unicast(src) || !unicast(dst) {
                return;
            }
            if seg.has(flags::SYN) && !seg.has(flags::ACK) {
                if self.tombstones.holds(cx.now, &key, seg.seq_num()) {
                    // Its attempt was reset already: this SYN crossed our RST, or the RST was
                    // lost. The same answer again, and no second host connect.
                    cx.counters.stale_syns += 1;
                    rst_reply(cx, key, seg);
                } else {
                    self.open_outbound(cx, key, seg);
                }
            } else {
                rst_reply(cx, key, seg);
            }
            return;
        };
        let reuse = seg.has(flags::SYN) && !seg.has(flags::ACK) && !seg.has(flags::RST);
        if reuse
            && self
                .table
                .get(idx)
                .is_some_and(|f| f.phase == Phase::TimeWait)
        {
            // The guest reuses the tuple of a closed connection: start afresh.
            self.free(cx, idx);
            self.open_outbound(cx, key, seg);
            return;
        }
        let run = runs.map(|runs| RunSlot { runs, idx });
        let next = self.segment_for_flow(cx, idx, key, seg, run);
        self.after(cx, idx, next);
    }

    fn segment_for_flow<'f>(
        &mut self,
        cx: &mut Cx<'_>,
        idx: u32,
        key: FlowKey,
        seg: &Segment<'f>,
        run: Option<RunSlot<'_, 'f>>,
    ) -> Next {
        let Some(f) = self.table.get_mut(idx) else {
            return Next::Keep;
        };
        match f.phase {
            Phase::Connecting => connecting_segment(cx, f, seg),
            Phase::SynAckSent => syn_ack_sent_segment(cx, f, key, seg, &mut self.stashes),
            Phase::SynSent => syn_sent_segment(cx, f, seg),
            Phase::Established => {
                f.touch(cx.now);
                established_segment(cx, f, seg, &mut self.stashes, run)
            }
            Phase::TimeWait => {
                if seg.has(flags::RST) {
                    return Next::Free;
                }
                if seg.has(flags::FIN) || !seg.data().is_empty() {
                    // Our last ACK was lost: again, and linger a while longer.
                    send_ack(cx, f);
                    f.timers.start(Timer::PhaseEnd, cx.now + TIME_WAIT);
                }
                Next::Keep
            }
        }
    }

    // --- Host sockets ---

    /// Something happened on socket `s`.
    pub fn handle_socket(&mut self, cx: &mut Cx<'_>, s: SockRef, ev: SockEvent) {
        let Some(idx) = self.table.by_sock(s) else {
            return;
        };
        let Some(f) = self.table.get_mut(idx) else {
            return;
        };
        f.touch(cx.now);
        let next = match ev {
            SockEvent::Connected => on_connected(cx, f),
            SockEvent::Error(_) => on_socket_error(cx, f, &mut self.tombstones),
            SockEvent::Readable => {
                if f.phase == Phase::Established {
                    f.exhausted = false;
                    send_data(cx, f)
                } else {
                    Next::Keep
                }
            }
            SockEvent::PeerClosed => {
                if f.to_guest == ToGuestClose::Open {
                    f.to_guest = ToGuestClose::Eof;
                }
                if f.phase == Phase::Established {
                    send_data(cx, f)
                } else {
                    Next::Keep
                }
            }
            SockEvent::Writable => on_writable(cx, f),
        };
        self.after(cx, idx, next);
    }

    /// Sends what the batch left due: one ACK per flow (window measured once), and data
    /// wherever the guest's window opened. The driver calls it after each batch of frames and
    /// socket events, before writing the queued frames to the guest.
    pub fn flush(&mut self, cx: &mut Cx<'_>) {
        // Flows marked while this runs go on the spare list, for the next round.
        let spare = std::mem::take(&mut self.dirty_spare);
        let mut list = std::mem::replace(&mut self.dirty, spare);
        self.pending_since = None;
        let mut budget_hit = false;
        for &idx in &list {
            let Some(f) = self.table.get_mut(idx) else {
                continue;
            };
            if !f.dirty {
                continue;
            }
            f.dirty = false;
            if budget_hit || cx.out.bytes() >= OUT_BUDGET {
                // Left for the next round.
                budget_hit = true;
                self.mark(idx, cx);
                continue;
            }
            if f.ack_due && f.phase == Phase::Established && !hold_ack(cx, f) {
                refresh_window(cx, f);
            }
            let mut next = Next::Keep;
            if f.send_due {
                f.send_due = false;
                next = send_data(cx, f);
            }
            if next == Next::Keep && (f.ack_due || f.hole_prompt || f.ack_twice) {
                send_ack(cx, f);
                if std::mem::take(&mut f.ack_twice) {
                    send_ack(cx, f);
                }
                if std::mem::take(&mut f.hole_prompt) {
                    // Three duplicates: the guest's next fast retransmit fills the next hole
                    // now rather than at its retransmission timeout.
                    cx.counters.hole_prompts += 1;
                    for _ in 0..DUP_ACK_THRESHOLD {
                        send_ack(cx, f);
                    }
                    f.start_prompt(cx.now, true);
                }
            }
            self.after(cx, idx, next);
        }
        list.clear();
        self.dirty_spare = list;
    }

    // --- Flow bookkeeping ---

    fn reschedule(&mut self, idx: u32) {
        let d = self.table.get(idx).and_then(Flow::deadline);
        self.table.schedule(idx, d);
    }

    /// Like [`Tcp::reschedule`], moving the flow's entry later too (its earlier timers
    /// stopped for good).
    fn reschedule_exactly(&mut self, idx: u32) {
        let d = self.table.get(idx).and_then(Flow::deadline);
        self.table.schedule_exactly(idx, d);
    }

    fn after(&mut self, cx: &mut Cx<'_>, idx: u32, next: Next) {
        let next = match (next, self.table.get_mut(idx)) {
            (_, None) => return,
            (Next::Keep, Some(f)) => finish_check(f),
            (next, _) => next,
        };
        match next {
            Next::Keep => {
                let Some(f) = self.table.get_mut(idx) else {
                    return;
                };
                if f.ack_due || f.send_due {
                    self.mark(idx, cx);
                } else {
                    update_interest(cx, f);
                }
                self.reschedule(idx);
            }
            Next::Abort { rst_guest } => {
                if let Some(f) = self.table.get_mut(idx) {
                    if rst_guest {
                        emit(cx, f, flags::RST | flags::ACK, f.snd_nxt);
                        cx.counters.resets_sent += 1;
                    }
                    if let Some(s) = f.sock.take() {
                        cx.io.close(s, true);
                    }
                }
                self.free(cx, idx);
            }
            Next::Finish => {
                if let Some(f) = self.table.get_mut(idx) {
                    if let Some(s) = f.sock.take() {
                        cx.io.close(s, false);
                    }
                    f.phase = Phase::TimeWait;
                    f.timers.stop(Timer::Retransmit);
                    f.timers.start(Timer::PhaseEnd, cx.now + TIME_WAIT);
                    if f.ack_due {
                        send_ack(cx, f);
                    }
                    f.ack_due = false;
                    f.send_due = false;
                }
                self.table.unbind_sock(idx);
                self.release_stash(idx);
                // Its retransmission timer stopped for good: only TIME_WAIT's end is left, and
                // a stale entry would wake the loop for nothing.
                self.reschedule_exactly(idx);
            }
            Next::Free => self.free(cx, idx),
        }
    }

    fn release_stash(&mut self, idx: u32) {
        if let Some(f) = self.table.get_mut(idx) {
            if f.stash.capacity() > 0 {
                f.stash = Vec::new();
                f.stash_at = 0;
                self.stashes.give_back();
            }
        }
    }

    fn free(&mut self, cx: &mut Cx<'_>, idx: u32) {
        self.release_stash(idx);
        if let Some(mut f) = self.table.remove(idx) {
            if let Some(s) = f.sock.take() {
                cx.io.close(s, true);
            }
        }
        cx.counters.flows = self.table.len() as u64;
    }
}

/// An established flow's segment: ACK processing, then data and FIN.
fn established_segment<'f>(
    cx: &mut Cx<'_>,
    f: &mut Flow,
    seg: &Segment<'f>,
    stashes: &mut StashBudget,
    run: Option<RunSlot<'_, 'f>>,
) -> Next {
    if seg.has(flags::RST) {
        let wnd = (u32::from(f.window_field()) << f.our_ws).max(1);
        if seg.seq_num().since(f.rcv_nxt) < wnd || seg.seq_num() == f.rcv_nxt {
            cx.counters.resets_received += 1;
            return Next::Abort { rst_guest: false };
        }
        return Next::Keep;
    }
    if seg.has(flags::SYN) {
        // A SYN on an established connection: challenge ACK (RFC 5961 section 4).
        send_ack(cx, f);
        return Next::Keep;
    }
    if !seg.has(flags::ACK) {
        return Next::Keep;
    }

    if let ControlFlow::Break(next) = on_ack(cx, f, seg) {
        return next;
    }
    guest_data(cx, f, seg, stashes, run)
}
