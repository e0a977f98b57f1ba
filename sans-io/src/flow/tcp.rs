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
//! An in-order guest segment's payload is handed to `HostSockets::send` straight from the
//! frame it arrived in. We acknowledge it to the guest only once the kernel has taken it, so
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
//! The window we advertise is the room the socket's send buffer has (`tcp_info().send_space`),
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
//! Readiness is level-triggered. Readable interest is off while the guest's window is full, and
//! while everything the socket holds is already in flight (new data is then picked up at the
//! next guest ACK), so that a socket holding only unacknowledged bytes doesn't wake the loop
//! forever.
//!
//! ## Closing
//!
//! `PeerClosed` means the host side hit end of stream (a short peek alone doesn't). Our FIN to
//! the guest follows the last byte: it is sent once a peek comes up short after the end of
//! stream is known, takes a sequence number, and is retransmitted like data until
//! acknowledged. A guest FIN is acknowledged, and passed on with `shutdown_write` once every
//! byte before it is written. Either direction can keep going after the other's FIN. When both
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
//! which the driver calls after each batch, sends one ACK per flow, measuring the window once.
//! Until it runs, [`Tcp::poll_timeout`] reports the time of the last event, so a driver that
//! forgets still gets it done through `handle_timeout`.
//!
//! ## States
//!
//! [`Phase`]: `Connecting` (guest SYN seen, host connect in progress), `SynAckSent` (host
//! connected, our SYN-ACK awaits the guest's ACK), `SynSent` (accepted host connection, our
//! SYN awaits the guest's SYN-ACK), `Established`, `TimeWait` (socket closed, key kept
//! briefly). Closing is not more states but facts per direction: the guest's FIN received
//! and the socket shut down for writing; the host's end of stream seen, our FIN's sequence
//! number, our FIN acknowledged.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::table::{FlowTable, KeyedHash};
use super::{Bind, HostSockets, SockEvent, SockRef};
use crate::config::{Config, DEFAULT_MTU};
use crate::fwd::{nat, ForwardMode};
use crate::guest::GuestState;
use crate::rng::Rng;
use crate::time::Instant;
use crate::wire::build::Route;
use crate::wire::tcp::{self as wtcp, flags, Header, Segment};
use crate::wire::{FrameQueue, MacAddr};

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
    /// Flows reset for a timeout (handshake, retransmission, inactivity, FIN).
    pub timeouts: u64,
    /// Connections accepted on a port that isn't forwarded, or whose guest flow clashes.
    pub unforwarded: u64,
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
    pub config: &'a Config,
    pub guest: &'a GuestState,
    pub rng: &'a mut Rng,
    pub io: &'a mut dyn HostSockets,
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

/// One connection.
#[derive(Debug)]
struct Flow {
    phase: Phase,
    sock: Option<SockRef>,
    guest: SocketAddr,
    peer: SocketAddr,
    /// Largest payload per frame to the guest.
    mss: u32,
    /// The MSS we advertised: the largest segment the guest sends us.
    rcv_mss: u32,
    /// Window scale shifts in use (both zero unless both SYNs carried the option).
    guest_ws: u8,
    our_ws: u8,
    guest_offered_ws: bool,

    // Guest to host.
    rcv_nxt: u32,
    /// `rcv_nxt` plus the room we last measured: no frame advertises beyond it.
    right_edge: u32,
    /// The widest window we have offered, in bytes: a sender sends a segment once half of it
    /// fits (see [`Flow::window_too_small`]).
    max_offered: u32,
    guest_fin: bool,
    host_shut: bool,
    /// Unwritten rest of one partially written segment: `stash[stash_at..]`.
    stash: Vec<u8>,
    stash_at: usize,
    /// In-order guest data was dropped for lack of room: resend-prompting ACKs are due once
    /// the socket has room.
    starved: bool,
    /// `Writable` reports wanted, to send a window update.
    want_wupdate: bool,
    /// `Writable` reports in a row that found no more room.
    fruitless_writable: u8,
    /// When to measure the room again, instead of listening for `Writable`.
    wupdate_poll_at: Option<Instant>,
    /// Measurements in a row that found no more room: each waits twice as long.
    wupdate_polls: u8,
    /// The end of the furthest out-of-order segment dropped: until `rcv_nxt` gets there, the
    /// guest has more to resend beyond whatever hole it is filling.
    ooo_edge: Option<u32>,
    /// In-order data arrived short of `ooo_edge`: the next ACK goes out with three duplicates.
    hole_prompt: bool,
    /// The last hole prompt, until in-order data answers it.
    prompt: Option<Prompt>,
    /// How long prompts took to be answered, smoothed (zero: not measured yet).
    prompt_rtt: Duration,
    /// The batch's ACK goes out twice (it ends a recovery).
    ack_twice: bool,

    // Host to guest.
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    snd_max: u32,
    /// The guest's window, in bytes.
    snd_wnd: u32,
    host_eof: bool,
    fin_seq: Option<u32>,
    fin_acked: bool,
    /// The last peek came up short: everything the socket holds is in flight.
    exhausted: bool,
    dup_acks: u8,

    // Timers.
    retries: u8,
    rto_at: Option<Instant>,
    /// Connect timeout, FIN timeout or end of TIME_WAIT, depending on the phase.
    phase_deadline: Option<Instant>,
    last_activity: Instant,

    // Batching.
    dirty: bool,
    ack_due: bool,
    send_due: bool,
    /// Interest last set on the socket (readable, writable).
    interest: (bool, bool),
}

/// A hole prompt in flight: ACKs for `seq` went out at `first`, again at `again_at` unless
/// data at `seq` arrives first.
#[derive(Debug, Clone, Copy)]
struct Prompt {
    seq: u32,
    first: Instant,
    again_at: Instant,
    tries: u8,
    /// Our prompt (rather than a wait for the guest's own fast retransmit): its answer
    /// measures how long prompts take.
    ours: bool,
}

impl Flow {
    /// A flow opening on socket `s`: nothing sent or received yet, no scaling, no timers. The
    /// two ways of opening (guest SYN, accepted host connection) set what differs.
    fn fresh(phase: Phase, s: SockRef, key: FlowKey, mss: u32, iss: u32, now: Instant) -> Flow {
        Flow {
            phase,
            sock: Some(s),
            guest: key.guest,
            peer: key.peer,
            mss,
            rcv_mss: mss,
            guest_ws: 0,
            our_ws: 0,
            guest_offered_ws: false,
            rcv_nxt: 0,
            right_edge: 0,
            max_offered: 0,
            guest_fin: false,
            host_shut: false,
            stash: Vec::new(),
            stash_at: 0,
            starved: false,
            want_wupdate: false,
            fruitless_writable: 0,
            wupdate_poll_at: None,
            wupdate_polls: 0,
            ooo_edge: None,
            hole_prompt: false,
            prompt: None,
            prompt_rtt: Duration::ZERO,
            ack_twice: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            host_eof: false,
            fin_seq: None,
            fin_acked: false,
            exhausted: false,
            dup_acks: 0,
            retries: 0,
            rto_at: None,
            phase_deadline: None,
            last_activity: now,
            dirty: false,
            ack_due: false,
            send_due: false,
            interest: (true, false),
        }
    }

    /// Data the guest sent beyond `rcv_nxt` was dropped, and it hasn't all come again yet.
    fn recovering(&self) -> bool {
        self.ooo_edge.is_some_and(|e| seq_lt(self.rcv_nxt, e))
    }

    /// How long to wait for the answer to a hole prompt sent `tries` times before.
    fn prompt_wait(&self, tries: u8) -> Duration {
        let base = (self.prompt_rtt * 2).clamp(PROMPT_WAIT_MIN, PROMPT_WAIT_MAX);
        base * (1u32 << tries.min(8))
    }

    fn stash_len(&self) -> usize {
        self.stash.len() - self.stash_at
    }

    /// The window we advertise is too small for the guest to send a segment into (it then
    /// waits for an update, or probes 200 ms and more later), and more than ever shrinking
    /// because we hold it.
    ///
    /// A sender avoiding silly windows (RFC 1122 4.2.3.4; Linux bounds its segments to half
    /// the largest window it was offered) sends once a full segment fits or half the widest
    /// window we ever offered: a window that small only because the socket's buffer is small
    /// is still usable. Only a window the guest's own data has filled is too small; telling
    /// the two apart keeps idle flows, whose window never fills, off the window-update path.
    fn window_too_small(&self) -> bool {
        let segment = self.mss.min(self.max_offered / 2).max(1);
        self.phase == Phase::Established
            && !self.guest_fin
            && !self.recovering()
            && u32::from(self.window_field()) << self.our_ws < segment
    }

    /// Moves the right edge to `edge`, remembering the widest window offered.
    fn set_right_edge(&mut self, edge: u32) {
        self.right_edge = edge;
        let offered = edge.wrapping_sub(self.rcv_nxt);
        if (offered as i32) > 0 {
            self.max_offered = self.max_offered.max(offered);
        }
    }

    fn in_flight(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }

    /// Bytes of data in flight (not counting a FIN).
    fn data_in_flight(&self) -> u32 {
        let f = self.in_flight();
        match self.fin_seq {
            Some(fin) if self.snd_nxt == fin.wrapping_add(1) => f.saturating_sub(1),
            _ => f,
        }
    }

    /// The window field for a segment: up to the right edge, scaled.
    fn window_field(&self) -> u16 {
        let avail = self.right_edge.wrapping_sub(self.rcv_nxt);
        if (avail as i32) < 0 {
            return 0;
        }
        (avail >> self.our_ws).min(u32::from(u16::MAX)) as u16
    }

    fn wanted_interest(&self) -> (bool, bool) {
        let established = self.phase == Phase::Established;
        let data_done = self.fin_seq.is_some();
        let flight = self.data_in_flight();
        let readable = established
            && !self.host_eof
            && !data_done
            && flight < self.snd_wnd
            && (flight == 0 || !self.exhausted);
        let writable = established && (self.stash_len() > 0 || self.starved || self.want_wupdate);
        (readable, writable)
    }

    /// When this flow next needs its timer handled.
    fn deadline(&self) -> Option<Instant> {
        let mut d = [self.rto_at, self.phase_deadline]
            .into_iter()
            .flatten()
            .min();
        if self.phase == Phase::Established {
            let idle = self.last_activity + ACT_TIMEOUT;
            let idle = [self.prompt.map(|p| p.again_at), self.wupdate_poll_at]
                .into_iter()
                .flatten()
                .fold(idle, Instant::min);
            d = Some(d.map_or(idle, |d| d.min(idle)));
        }
        d
    }
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

/// The wait before the next measurement of the room after `polls` that found none.
fn wupdate_poll_wait(polls: u8) -> Duration {
    (WUPDATE_POLL * (1u32 << polls.min(16))).min(WUPDATE_POLL_MAX)
}

fn rto(retries: u8) -> Duration {
    RTO_INITIAL
        .checked_mul(1u32 << retries.min(16))
        .unwrap_or(RTO_MAX)
        .min(RTO_MAX)
}

/// The MSS our MTU allows for a family.
pub fn mss_for(config: &Config, v6: bool) -> u16 {
    let mtu = config.mtu.filter(|&m| m > 0).unwrap_or(DEFAULT_MTU);
    let overhead = if v6 { 60 } else { 40 };
    mtu.saturating_sub(overhead).max(64)
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
    ephemeral: RangeInclusive<u16>,
    /// Flows with work for [`Tcp::flush`].
    dirty: Vec<u32>,
    /// Scratch lists, reused.
    dirty_spare: Vec<u32>,
    scratch: Vec<u32>,
    stashes: usize,
    /// When work became pending for [`Tcp::flush`].
    pending_since: Option<Instant>,
    tombstones: Tombstones,
}

/// Connection attempts we reset, by the guest's 4-tuple and initial sequence number, until
/// when they are remembered (all for the same time, so the oldest is in front).
#[derive(Debug, Default)]
struct Tombstones {
    list: VecDeque<(Instant, FlowKey, u32)>,
}

impl Tombstones {
    fn bury(&mut self, now: Instant, key: FlowKey, isn: u32) {
        self.expire(now);
        if self.list.len() >= MAX_TOMBSTONES {
            self.list.pop_front();
        }
        self.list.push_back((now + TOMBSTONE_TIME, key, isn));
    }

    fn holds(&mut self, now: Instant, key: &FlowKey, isn: u32) -> bool {
        self.expire(now);
        self.list.iter().any(|(_, k, i)| k == key && *i == isn)
    }

    fn expire(&mut self, now: Instant) {
        while self.list.front().is_some_and(|t| t.0 <= now) {
            self.list.pop_front();
        }
    }
}

impl Tcp {
    pub fn new(max_flows: usize, ephemeral: RangeInclusive<u16>, hash: KeyedHash) -> Tcp {
        Tcp {
            table: FlowTable::new(max_flows, hash),
            ephemeral,
            dirty: Vec::new(),
            dirty_spare: Vec::new(),
            scratch: Vec::new(),
            stashes: 0,
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

    /// A TCP segment from the guest, `src` to `dst` (already past IP checks).
    pub fn handle_segment(&mut self, cx: &mut Cx<'_>, src: IpAddr, dst: IpAddr, seg: &Segment<'_>) {
        if !cx.config.protocols.tcp {
            cx.counters.disabled_drops += 1;
            return;
        }
        let key = FlowKey {
            guest: SocketAddr::new(src, seg.src_port),
            peer: SocketAddr::new(dst, seg.dst_port),
        };
        let Some(idx) = self.table.by_key(&key) else {
            if seg.has(flags::RST) || !usable_unicast(src) || !usable_unicast(dst) {
                return;
            }
            if seg.has(flags::SYN) && !seg.has(flags::ACK) {
                if self.tombstones.holds(cx.now, &key, seg.seq) {
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
        let next = self.segment_for_flow(cx, idx, key, seg);
        self.after(cx, idx, next);
    }

    fn open_outbound(&mut self, cx: &mut Cx<'_>, key: FlowKey, seg: &Segment<'_>) {
        let (src, dst) = (key.guest.ip(), key.peer.ip());
        if !usable_unicast(src) || !usable_unicast(dst) || seg.dst_port == 0 || seg.src_port == 0 {
            return;
        }
        if self.table.is_full() {
            cx.counters.table_full += 1;
            rst_reply(cx, key, seg);
            return;
        }
        let Some(target) = nat::from_guest(cx.config, key.peer) else {
            rst_reply(cx, key, seg);
            return;
        };
        let v6 = dst.is_ipv6();
        let opts = wtcp::syn_options(seg.options);
        let our_mss = u32::from(mss_for(cx.config, v6));
        let default_mss = if v6 { 1220 } else { 536 };
        let mss = u32::from(opts.mss.unwrap_or(default_mss)).clamp(64, our_mss);
        let bind = match (v6, cx.config.ip4.as_ref(), cx.config.ip6.as_ref()) {
            // The host's loopback is reached from anywhere; binding would only break it.
            _ if target.ip().is_loopback() => Bind::default(),
            (false, Some(c), _) => Bind {
                addr: c.outbound_addr.map(IpAddr::V4),
                iface: c.outbound_if.as_deref(),
            },
            (true, _, Some(c)) => Bind {
                addr: c.outbound_addr.map(IpAddr::V6),
                iface: c.outbound_if.as_deref(),
            },
            _ => Bind::default(),
        };
        let s = match cx.io.tcp_connect(target, bind, Some(mss as u16)) {
            Ok(s) => s,
            Err(_) => {
                cx.counters.connect_refused += 1;
                self.tombstones.bury(cx.now, key, seg.seq);
                rst_reply(cx, key, seg);
                return;
            }
        };
        let iss = cx.rng.next_u64() as u32;
        let (guest_ws, our_ws) = match opts.wscale {
            Some(ws) => (ws, OUR_WSCALE),
            None => (0, 0),
        };
        let rcv_nxt = seg.seq.wrapping_add(1);
        let flow = Flow {
            mss,
            guest_ws,
            our_ws,
            guest_offered_ws: opts.wscale.is_some(),
            rcv_nxt,
            right_edge: rcv_nxt,
            snd_wnd: u32::from(seg.window),
            phase_deadline: Some(cx.now + CONNECT_TIMEOUT),
            ..Flow::fresh(Phase::Connecting, s, key, our_mss, iss, cx.now)
        };
        match self.table.insert(key, flow) {
            Ok(idx) => {
                self.table.bind_sock(idx, s);
                cx.counters.opened += 1;
                cx.counters.flows = self.table.len() as u64;
                self.reschedule(idx);
            }
            Err(_) => {
                cx.io.close(s, true);
                rst_reply(cx, key, seg);
            }
        }
    }

    fn segment_for_flow(
        &mut self,
        cx: &mut Cx<'_>,
        idx: u32,
        key: FlowKey,
        seg: &Segment<'_>,
    ) -> Next {
        let stashes_full = self.stashes >= MAX_STASHES;
        let Some(f) = self.table.get_mut(idx) else {
            return Next::Keep;
        };
        let rst = seg.has(flags::RST);
        let syn = seg.has(flags::SYN);
        let ack = seg.has(flags::ACK);
        match f.phase {
            Phase::Connecting => {
                if rst && seg.seq == f.rcv_nxt {
                    cx.counters.resets_received += 1;
                    return Next::Abort { rst_guest: false };
                }
                // Retransmitted SYNs wait for the connect to finish.
                Next::Keep
            }
            Phase::SynAckSent => {
                if rst {
                    if seg.seq == f.rcv_nxt {
                        cx.counters.resets_received += 1;
                        return Next::Abort { rst_guest: false };
                    }
                    return Next::Keep;
                }
                if syn && !ack {
                    if seg.seq.wrapping_add(1) == f.rcv_nxt {
                        send_syn(cx, f, true);
                    }
                    return Next::Keep;
                }
                if !ack || syn {
                    return Next::Keep;
                }
                if seg.ack != f.iss.wrapping_add(1) {
                    rst_reply(cx, key, seg);
                    return Next::Keep;
                }
                f.phase = Phase::Established;
                f.snd_una = seg.ack;
                f.snd_nxt = seg.ack;
                f.snd_max = seg.ack;
                f.snd_wnd = u32::from(seg.window) << f.guest_ws;
                f.retries = 0;
                f.rto_at = None;
                f.phase_deadline = None;
                f.last_activity = cx.now;
                f.send_due = true;
                established_segment(cx, f, seg, stashes_full, &mut self.stashes)
            }
            Phase::SynSent => {
                if rst {
                    if ack && seg.ack == f.iss.wrapping_add(1) {
                        cx.counters.resets_received += 1;
                        return Next::Abort { rst_guest: false };
                    }
                    return Next::Keep;
                }
                if !(syn && ack) || seg.ack != f.iss.wrapping_add(1) {
                    return Next::Keep;
                }
                let opts = wtcp::syn_options(seg.options);
                match opts.wscale {
                    Some(ws) => {
                        f.guest_ws = ws;
                        f.our_ws = OUR_WSCALE;
                    }
                    None => {
                        f.guest_ws = 0;
                        f.our_ws = 0;
                    }
                }
                let v6 = f.guest.is_ipv6();
                let default_mss = if v6 { 1220 } else { 536 };
                f.mss = u32::from(opts.mss.unwrap_or(default_mss)).clamp(64, f.rcv_mss);
                f.rcv_nxt = seg.seq.wrapping_add(1);
                f.set_right_edge(f.rcv_nxt);
                f.snd_una = seg.ack;
                f.snd_nxt = seg.ack;
                f.snd_max = seg.ack;
                f.snd_wnd = u32::from(seg.window); // never scaled in a SYN
                f.phase = Phase::Established;
                f.retries = 0;
                f.rto_at = None;
                f.phase_deadline = None;
                f.last_activity = cx.now;
                f.ack_due = true;
                f.send_due = true;
                Next::Keep
            }
            Phase::Established => {
                f.last_activity = cx.now;
                established_segment(cx, f, seg, stashes_full, &mut self.stashes)
            }
            Phase::TimeWait => {
                if rst {
                    return Next::Free;
                }
                if seg.has(flags::FIN) || !seg.payload.is_empty() {
                    // Our last ACK was lost: again, and linger a while longer.
                    send_ack(cx, f);
                    f.phase_deadline = Some(cx.now + TIME_WAIT);
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
        f.last_activity = cx.now;
        let next = match ev {
            SockEvent::Connected => {
                if f.phase == Phase::Connecting {
                    f.phase = Phase::SynAckSent;
                    f.phase_deadline = None;
                    f.snd_nxt = f.iss.wrapping_add(1);
                    f.snd_max = f.snd_nxt;
                    refresh_window(cx, f);
                    send_syn(cx, f, true);
                    f.retries = 0;
                    f.rto_at = Some(cx.now + rto(0));
                }
                Next::Keep
            }
            SockEvent::Error(_) => {
                if f.phase == Phase::Connecting {
                    cx.counters.connect_refused += 1;
                    // The guest is still in SYN-SENT: RST with ACK of its SYN.
                    emit(cx, f, flags::RST | flags::ACK, 0);
                    bury(&mut self.tombstones, cx.now, f);
                    cx.counters.resets_sent += 1;
                    Next::Abort { rst_guest: false }
                } else {
                    Next::Abort { rst_guest: true }
                }
            }
            SockEvent::Readable => {
                if f.phase == Phase::Established {
                    f.exhausted = false;
                    send_data(cx, f)
                } else {
                    Next::Keep
                }
            }
            SockEvent::PeerClosed => {
                f.host_eof = true;
                if f.phase == Phase::Established {
                    send_data(cx, f)
                } else {
                    Next::Keep
                }
            }
            SockEvent::Writable => {
                let wanted = std::mem::take(&mut f.want_wupdate);
                if f.phase == Phase::Established {
                    let next = flush_stash(cx, f);
                    if next == Next::Keep && f.stash_len() == 0 {
                        let old_edge = f.right_edge;
                        refresh_window(cx, f);
                        if f.starved {
                            f.starved = false;
                            f.fruitless_writable = 0;
                            // A window update, then duplicate ACKs to prompt a resend of
                            // what we dropped.
                            for _ in 0..=DUP_ACK_THRESHOLD {
                                send_ack(cx, f);
                            }
                        } else if seq_gt(f.right_edge, old_edge) {
                            f.fruitless_writable = 0;
                            send_ack(cx, f);
                        } else if wanted && f.window_too_small() {
                            // No more room yet: the guest still waits. Keep listening, but a
                            // level-triggered report that keeps coming without room would
                            // spin the loop: after two in a row, measure on a timer instead.
                            f.fruitless_writable += 1;
                            if f.fruitless_writable < 2 {
                                f.want_wupdate = true;
                            } else {
                                f.fruitless_writable = 0;
                                f.wupdate_polls = 0;
                                f.wupdate_poll_at = Some(cx.now + WUPDATE_POLL);
                            }
                        }
                    }
                    next
                } else {
                    Next::Keep
                }
            }
        };
        self.after(cx, idx, next);
    }

    /// A connection accepted on a forwarding listener: `s` the new socket, `peer` the remote
    /// end, `local` the address it reached.
    pub fn handle_accept(
        &mut self,
        cx: &mut Cx<'_>,
        s: SockRef,
        peer: SocketAddr,
        local: SocketAddr,
    ) {
        if !cx.config.protocols.tcp {
            cx.io.close(s, true);
            return;
        }
        // Dual-stack listeners report IPv4 peers as v4-mapped IPv6 addresses.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let port = match &cx.config.forwarding.tcp_in {
            // Auto: the driver listens on what it found bound in the guest, same port.
            ForwardMode::Auto => Some(local.port()),
            mode => mode.target(local.ip(), local.port(), self.ephemeral.clone()),
        };
        let Some(port) = port.filter(|&p| p != 0) else {
            cx.counters.unforwarded += 1;
            cx.io.close(s, true);
            return;
        };
        let Some((seen, guest_ip)) = nat::to_guest(cx.config, cx.guest, peer, local.ip()) else {
            cx.counters.unforwarded += 1;
            cx.io.close(s, true);
            return;
        };
        let key = FlowKey {
            guest: SocketAddr::new(guest_ip, port),
            peer: seen,
        };
        if self.table.is_full() {
            cx.counters.table_full += 1;
            cx.io.close(s, true);
            return;
        }
        if self.table.by_key(&key).is_some() {
            cx.counters.unforwarded += 1;
            cx.io.close(s, true);
            return;
        }
        let v6 = guest_ip.is_ipv6();
        let our_mss = u32::from(mss_for(cx.config, v6));
        let iss = cx.rng.next_u64() as u32;
        let mut flow = Flow {
            // Our SYN takes a sequence number; what the guest will offer is not known yet.
            guest_offered_ws: true,
            snd_nxt: iss.wrapping_add(1),
            snd_max: iss.wrapping_add(1),
            rto_at: Some(cx.now + rto(0)),
            ..Flow::fresh(Phase::SynSent, s, key, our_mss, iss, cx.now)
        };
        refresh_window(cx, &mut flow);
        send_syn(cx, &flow, false);
        update_interest(cx, &mut flow);
        match self.table.insert(key, flow) {
            Ok(idx) => {
                self.table.bind_sock(idx, s);
                cx.counters.accepted += 1;
                cx.counters.flows = self.table.len() as u64;
                self.reschedule(idx);
            }
            Err(_) => cx.io.close(s, true),
        }
    }

    // --- Timers and batches ---

    /// Runs what is due at `now`, then any pending batch work.
    pub fn handle_timeout(&mut self, cx: &mut Cx<'_>) {
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        while let Some(idx) = self.table.pop_due(cx.now) {
            due.push(idx);
        }
        for &idx in &due {
            let next = self.timer_for_flow(cx, idx);
            self.after(cx, idx, next);
        }
        due.clear();
        self.scratch = due;
        self.flush(cx);
    }

    fn timer_for_flow(&mut self, cx: &mut Cx<'_>, idx: u32) -> Next {
        let Some(f) = self.table.get_mut(idx) else {
            return Next::Keep;
        };
        let now = cx.now;
        match f.phase {
            Phase::TimeWait => {
                if f.phase_deadline.is_some_and(|d| d <= now) {
                    return Next::Free;
                }
                Next::Keep
            }
            Phase::Connecting => {
                if f.phase_deadline.is_some_and(|d| d <= now) {
                    cx.counters.timeouts += 1;
                    cx.counters.connect_refused += 1;
                    emit(cx, f, flags::RST | flags::ACK, 0);
                    bury(&mut self.tombstones, now, f);
                    cx.counters.resets_sent += 1;
                    return Next::Abort { rst_guest: false };
                }
                Next::Keep
            }
            Phase::SynAckSent | Phase::SynSent => {
                if f.rto_at.is_none_or(|d| d > now) {
                    return Next::Keep;
                }
                if f.retries >= SYN_RETRIES {
                    cx.counters.timeouts += 1;
                    return Next::Abort {
                        rst_guest: f.phase == Phase::SynAckSent,
                    };
                }
                f.retries += 1;
                cx.counters.retransmissions += 1;
                send_syn(cx, f, f.phase == Phase::SynAckSent);
                f.rto_at = Some(now + rto(f.retries));
                Next::Keep
            }
            Phase::Established => {
                if f.last_activity + ACT_TIMEOUT <= now {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
                if f.phase_deadline.is_some_and(|d| d <= now) {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
                if f.wupdate_poll_at.is_some_and(|t| t <= now) {
                    f.wupdate_poll_at = None;
                    let old_edge = f.right_edge;
                    refresh_window(cx, f);
                    if seq_gt(f.right_edge, old_edge) {
                        f.wupdate_polls = 0;
                        send_ack(cx, f);
                    } else if f.window_too_small() {
                        // Still no room: the peer isn't reading. Measure again, each time
                        // twice as late, so that a stalled flow costs next to nothing.
                        f.wupdate_polls = f.wupdate_polls.saturating_add(1);
                        f.wupdate_poll_at = Some(now + wupdate_poll_wait(f.wupdate_polls));
                    }
                }
                if let Some(p) = f.prompt.filter(|p| p.again_at <= now) {
                    f.prompt = None;
                    let waiting_for_room = f.starved || f.stash_len() > 0;
                    if f.recovering()
                        && f.rcv_nxt == p.seq
                        && p.tries < PROMPT_RETRIES
                        && !waiting_for_room
                    {
                        // Unanswered: the resent segment or our ACKs were lost. Again, as a
                        // window update first, since a guest counts duplicates only after an
                        // ACK that changed something. (Data dropped for want of room is
                        // asked for again once there is room.)
                        cx.counters.prompt_repeats += 1;
                        nudge_window(cx, f);
                        for _ in 0..=DUP_ACK_THRESHOLD {
                            send_ack(cx, f);
                        }
                        f.prompt = Some(Prompt {
                            again_at: now + f.prompt_wait(p.tries + 1),
                            tries: p.tries + 1,
                            ..p
                        });
                    }
                }
                if f.rto_at.is_none_or(|d| d > now) {
                    return Next::Keep;
                }
                if f.in_flight() > 0 && f.retries >= MAX_RETRIES {
                    cx.counters.timeouts += 1;
                    return Next::Abort { rst_guest: true };
                }
                // Probing a closed window backs off but never gives up: a guest that answers
                // is alive, one that doesn't meets the inactivity timeout.
                f.retries =
                    f.retries
                        .saturating_add(1)
                        .min(if f.in_flight() > 0 { u8::MAX } else { 8 });
                f.rto_at = Some(now + rto(f.retries));
                if f.in_flight() > 0 {
                    cx.counters.retransmissions += 1;
                    f.snd_nxt = f.snd_una;
                    f.dup_acks = 0;
                    f.exhausted = false;
                    let next = send_data(cx, f);
                    if f.in_flight() == 0 && f.snd_wnd == 0 {
                        window_probe(cx, f);
                    }
                    next
                } else if f.snd_wnd == 0 {
                    window_probe(cx, f);
                    Next::Keep
                } else {
                    f.rto_at = None;
                    f.retries = 0;
                    Next::Keep
                }
            }
        }
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
            if f.ack_due && f.phase == Phase::Established {
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
                    f.prompt = Some(Prompt {
                        seq: f.rcv_nxt,
                        first: cx.now,
                        again_at: cx.now + f.prompt_wait(0),
                        tries: 0,
                        ours: true,
                    });
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
                    f.rto_at = None;
                    f.phase_deadline = Some(cx.now + TIME_WAIT);
                    if f.ack_due {
                        send_ack(cx, f);
                    }
                    f.ack_due = false;
                    f.send_due = false;
                }
                self.table.unbind_sock(idx);
                self.release_stash(idx);
                self.reschedule(idx);
            }
            Next::Free => self.free(cx, idx),
        }
    }

    fn release_stash(&mut self, idx: u32) {
        if let Some(f) = self.table.get_mut(idx) {
            if f.stash.capacity() > 0 {
                f.stash = Vec::new();
                f.stash_at = 0;
                self.stashes = self.stashes.saturating_sub(1);
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

// --- Per-flow mechanics, free of the table ---

/// Remembers a connection attempt being reset (the flow still `Connecting`: `rcv_nxt` is one
/// past the guest's SYN).
fn bury(tombstones: &mut Tombstones, now: Instant, f: &Flow) {
    let key = FlowKey {
        guest: f.guest,
        peer: f.peer,
    };
    tombstones.bury(now, key, f.rcv_nxt.wrapping_sub(1));
}

fn usable_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast(),
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    }
}

fn guest_mac(cx: &Cx<'_>) -> MacAddr {
    cx.guest
        .mac
        .or(cx.config.ns_mac)
        .unwrap_or(MacAddr::BROADCAST)
}

fn route(cx: &Cx<'_>, peer: IpAddr, guest: IpAddr) -> Route {
    Route {
        src_mac: cx.config.our_mac,
        dst_mac: guest_mac(cx),
        src: peer,
        dst: guest,
    }
}

/// A RST answering a segment no flow wants (RFC 9293 section 3.10.7.1).
fn rst_reply(cx: &mut Cx<'_>, key: FlowKey, seg: &Segment<'_>) {
    let h = if seg.has(flags::ACK) {
        Header {
            src_port: key.peer.port(),
            dst_port: key.guest.port(),
            seq: seg.ack,
            flags: flags::RST,
            ..Header::default()
        }
    } else {
        Header {
            src_port: key.peer.port(),
            dst_port: key.guest.port(),
            seq: 0,
            ack: seg.seq.wrapping_add(seg.seq_len()),
            flags: flags::RST | flags::ACK,
            ..Header::default()
        }
    };
    let r = route(cx, key.peer.ip(), key.guest.ip());
    wtcp::frame(cx.out, &r, &h, &[]);
    cx.counters.resets_sent += 1;
}

/// A control segment from `f` with `flags` at `seq` (`ack` is `rcv_nxt`).
fn emit(cx: &mut Cx<'_>, f: &Flow, fl: u8, seq: u32) {
    let h = Header {
        src_port: f.peer.port(),
        dst_port: f.guest.port(),
        seq,
        ack: if fl & flags::ACK != 0 { f.rcv_nxt } else { 0 },
        flags: fl,
        window: f.window_field(),
        mss: None,
        wscale: None,
    };
    let r = route(cx, f.peer.ip(), f.guest.ip());
    wtcp::frame(cx.out, &r, &h, &[]);
}

fn send_ack(cx: &mut Cx<'_>, f: &mut Flow) {
    emit(cx, f, flags::ACK, f.snd_nxt);
    f.ack_due = false;
    if f.window_too_small() {
        f.want_wupdate = true;
    }
}

/// Our SYN (inbound) or SYN-ACK (outbound).
fn send_syn(cx: &mut Cx<'_>, f: &Flow, ack: bool) {
    let avail = f.right_edge.wrapping_sub(f.rcv_nxt);
    let window = if (avail as i32) < 0 {
        0
    } else {
        avail.min(u32::from(u16::MAX)) as u16
    };
    let h = Header {
        src_port: f.peer.port(),
        dst_port: f.guest.port(),
        seq: f.iss,
        ack: if ack { f.rcv_nxt } else { 0 },
        flags: if ack {
            flags::SYN | flags::ACK
        } else {
            flags::SYN
        },
        window,
        mss: Some(f.rcv_mss.min(u32::from(u16::MAX)) as u16),
        wscale: f.guest_offered_ws.then_some(OUR_WSCALE),
    };
    let r = route(cx, f.peer.ip(), f.guest.ip());
    wtcp::frame(cx.out, &r, &h, &[]);
}

/// A zero-window probe: an ACK one below `snd_una`, which the guest answers with its window.
fn window_probe(cx: &mut Cx<'_>, f: &Flow) {
    emit(cx, f, flags::ACK, f.snd_una.wrapping_sub(1));
}

/// Measures the socket's room and moves the right edge there.
fn refresh_window(cx: &mut Cx<'_>, f: &mut Flow) {
    let Some(s) = f.sock else { return };
    let Ok(info) = cx.io.tcp_info(s) else { return };
    let room = (info.send_space as usize).saturating_sub(f.stash_len()) as u32;
    let max = u32::from(u16::MAX) << f.our_ws;
    let mut edge = f.rcv_nxt.wrapping_add(room.min(max));
    if let Some(ooo) = f.ooo_edge.filter(|_| f.recovering()) {
        // Hold the edge while the guest fills holes: new data beyond what it must resend
        // would only be dropped, and keep the recovery going.
        let held = if seq_gt(ooo, f.right_edge) {
            ooo
        } else {
            f.right_edge
        };
        if seq_lt(held, edge) {
            edge = held;
        }
    }
    f.set_right_edge(edge);
}

/// Moves the right edge one window unit further if the socket has the room, or else one
/// unit back: either way the next ACK is a window update, which a guest takes as news (the
/// duplicates after it then count).
fn nudge_window(cx: &mut Cx<'_>, f: &mut Flow) {
    let Some(s) = f.sock else { return };
    let Ok(info) = cx.io.tcp_info(s) else { return };
    let room = (info.send_space as usize).saturating_sub(f.stash_len()) as u32;
    let max = u32::from(u16::MAX) << f.our_ws;
    let limit = f.rcv_nxt.wrapping_add(room.min(max));
    let unit = 1u32 << f.our_ws;
    let wider = f.right_edge.wrapping_add(unit);
    if seq_lt(f.right_edge, f.rcv_nxt) {
        return;
    }
    if !seq_gt(wider, limit) && f.window_field() < u16::MAX {
        f.set_right_edge(wider);
    } else if f.window_field() > 1 {
        f.set_right_edge(f.right_edge.wrapping_sub(unit));
    }
}

fn update_interest(cx: &mut Cx<'_>, f: &mut Flow) {
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

/// Graceful end: both FINs acknowledged, nothing left to write.
fn finish_check(f: &mut Flow) -> Next {
    if f.phase == Phase::Established
        && f.guest_fin
        && f.host_shut
        && f.fin_acked
        && f.stash_len() == 0
    {
        Next::Finish
    } else {
        Next::Keep
    }
}

fn shutdown_if_due(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    if f.guest_fin && !f.host_shut && f.stash_len() == 0 {
        let Some(s) = f.sock else { return Next::Keep };
        if cx.io.shutdown_write(s).is_err() {
            return Next::Abort { rst_guest: true };
        }
        f.host_shut = true;
    }
    Next::Keep
}

/// Writes what the stash holds. `Keep` unless the socket failed.
fn flush_stash(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    if f.stash_len() == 0 {
        return Next::Keep;
    }
    let Some(s) = f.sock else { return Next::Keep };
    match cx.io.send(s, &f.stash[f.stash_at..]) {
        Ok(n) => {
            let n = n.min(f.stash_len());
            f.stash_at += n;
            cx.counters.bytes_to_host += n as u64;
            if f.stash_len() == 0 {
                f.stash.clear();
                f.stash_at = 0;
                return shutdown_if_due(cx, f);
            }
            Next::Keep
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Keep,
        Err(_) => Next::Abort { rst_guest: true },
    }
}

/// An established flow's segment: ACK processing, then data and FIN.
fn established_segment(
    cx: &mut Cx<'_>,
    f: &mut Flow,
    seg: &Segment<'_>,
    stashes_full: bool,
    stashes: &mut usize,
) -> Next {
    if seg.has(flags::RST) {
        let wnd = (u32::from(f.window_field()) << f.our_ws).max(1);
        let off = seg.seq.wrapping_sub(f.rcv_nxt);
        if off < wnd || seg.seq == f.rcv_nxt {
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

    // Acknowledgement of what we sent.
    let a = seg.ack;
    if seq_gt(a, f.snd_max) {
        send_ack(cx, f);
        return Next::Keep;
    }
    let wnd = u32::from(seg.window) << f.guest_ws;
    if seq_gt(a, f.snd_una) {
        let acked = a.wrapping_sub(f.snd_una);
        let mut data_acked = acked;
        if let Some(fin) = f.fin_seq {
            if a == fin.wrapping_add(1) {
                f.fin_acked = true;
                data_acked -= 1;
            }
        }
        if data_acked > 0 {
            if let Some(s) = f.sock {
                if cx.io.discard(s, data_acked as usize).is_err() {
                    return Next::Abort { rst_guest: true };
                }
            }
        }
        f.snd_una = a;
        if seq_lt(f.snd_nxt, a) {
            f.snd_nxt = a;
        }
        f.retries = 0;
        f.dup_acks = 0;
        f.exhausted = false;
        f.rto_at = (f.in_flight() > 0).then(|| cx.now + rto(0));
        f.snd_wnd = wnd;
        f.send_due = true;
    } else if a == f.snd_una {
        let pure = seg.payload.is_empty() && !seg.has(flags::FIN);
        if pure && f.in_flight() > 0 && wnd == f.snd_wnd {
            f.dup_acks = f.dup_acks.saturating_add(1);
            if f.dup_acks == DUP_ACK_THRESHOLD {
                cx.counters.retransmissions += 1;
                cx.counters.fast_retransmits += 1;
                f.snd_nxt = f.snd_una;
                f.exhausted = false;
                f.send_due = true;
            }
        }
        if wnd != f.snd_wnd {
            if f.snd_wnd == 0 {
                f.retries = 0;
                if f.in_flight() == 0 {
                    f.rto_at = None;
                }
            }
            f.snd_wnd = wnd;
            f.send_due = true;
        }
    }
    if f.snd_wnd == 0 && f.in_flight() == 0 && f.rto_at.is_none() && !f.fin_acked {
        // Persist: probe the closed window until it opens.
        f.rto_at = Some(cx.now + rto(f.retries));
    }

    // Data and FIN from the guest.
    let fin = seg.has(flags::FIN);
    let payload = seg.payload;
    if payload.is_empty() && !fin {
        if seg.seq == f.rcv_nxt.wrapping_sub(1) {
            // Keepalive or window probe: answer with the window as it is now.
            refresh_window(cx, f);
            send_ack(cx, f);
        }
        return Next::Keep;
    }
    if f.guest_fin {
        // Retransmitted FIN, or data after it: say where we are.
        send_ack(cx, f);
        return Next::Keep;
    }
    let off = f.rcv_nxt.wrapping_sub(seg.seq);
    if (off as i32) < 0 {
        cx.counters.out_of_order += 1;
        // Lost to us: remember how far the guest got (within the window; anything beyond is
        // not a segment a sane guest sent).
        if seq_lt(seg.seq, f.right_edge) {
            let end = seg.seq.wrapping_add(payload.len() as u32);
            if f.ooo_edge.is_none_or(|e| seq_gt(end, e)) {
                f.ooo_edge = Some(end);
            }
            if f.prompt.is_none() {
                // Our duplicate ACKs should make the guest resend the hole; if they don't
                // (too few, or lost, or its resent segment lost), a prompt will.
                f.prompt = Some(Prompt {
                    seq: f.rcv_nxt,
                    first: cx.now,
                    again_at: cx.now + f.prompt_wait(0),
                    tries: 0,
                    ours: false,
                });
            }
        }
        send_ack(cx, f);
        return Next::Keep;
    }
    let off = off as usize;
    if off > payload.len() || (off == payload.len() && !fin) {
        // Old: a duplicate, or a one-byte keepalive.
        refresh_window(cx, f);
        send_ack(cx, f);
        return Next::Keep;
    }
    let data = &payload[off..];
    if !data.is_empty() {
        let next = flush_stash(cx, f);
        if next != Next::Keep {
            return next;
        }
        if f.stash_len() > 0 {
            cx.counters.no_room_drops += 1;
            f.starved = true;
            return Next::Keep;
        }
        let Some(s) = f.sock else { return Next::Keep };
        let n = match cx.io.send(s, data) {
            Ok(n) => n.min(data.len()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return Next::Abort { rst_guest: true },
        };
        cx.counters.bytes_to_host += n as u64;
        if n < data.len() {
            let rest = &data[n..];
            if f.stash.capacity() == 0 && stashes_full {
                cx.counters.stash_unavailable += 1;
                f.rcv_nxt = f.rcv_nxt.wrapping_add(n as u32);
                if n == 0 {
                    cx.counters.no_room_drops += 1;
                }
                f.starved = true;
                f.ack_due = true;
                return Next::Keep;
            }
            if f.stash.capacity() == 0 {
                f.stash = Vec::with_capacity((f.rcv_mss as usize).max(rest.len()));
                *stashes += 1;
            }
            f.stash.clear();
            f.stash.extend_from_slice(rest);
            f.stash_at = 0;
            cx.counters.stash_uses += 1;
        }
        f.rcv_nxt = f.rcv_nxt.wrapping_add(data.len() as u32);
        f.ack_due = true;
        if let Some(p) = f.prompt.take().filter(|p| p.ours) {
            // Answered (by the resent segment, or one sent anyway): measured from the first
            // prompt, which errs on the long side if it was repeated.
            let rtt = cx.now.saturating_since(p.first);
            f.prompt_rtt = if f.prompt_rtt.is_zero() {
                rtt
            } else {
                (f.prompt_rtt * 7 + rtt) / 8
            };
        }
        if f.recovering() {
            // The guest is resending into a hole, and what it sent beyond was dropped.
            f.hole_prompt = true;
        } else if f.ooo_edge.take().is_some() {
            // All resent. The ACK saying so reopens the window we held, and the guest has
            // nothing else in flight to make up for its loss: it goes out twice.
            f.hole_prompt = false;
            f.ack_twice = true;
        }
    }
    if fin {
        f.guest_fin = true;
        f.rcv_nxt = f.rcv_nxt.wrapping_add(1);
        f.ack_due = true;
        if f.fin_seq.is_some() && f.phase_deadline.is_none() {
            f.phase_deadline = Some(cx.now + FIN_TIMEOUT);
        }
        return shutdown_if_due(cx, f);
    }
    Next::Keep
}

/// Sends host data (and our FIN after its end) as far as the guest's window allows.
fn send_data(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    let Some(s) = f.sock else { return Next::Keep };
    if f.phase != Phase::Established {
        return Next::Keep;
    }
    let r = route(cx, f.peer.ip(), f.guest.ip());
    let was_idle = f.in_flight() == 0;
    let mut sent_any = false;
    loop {
        // Data left before our FIN, if its place is known.
        let mut until_fin = u32::MAX;
        if let Some(fin) = f.fin_seq {
            if f.snd_nxt == fin {
                send_fin(cx, f);
                sent_any = true;
                break;
            }
            if !seq_lt(f.snd_nxt, fin) {
                break;
            }
            until_fin = fin.wrapping_sub(f.snd_nxt);
        }
        let flight = f.in_flight();
        if flight >= f.snd_wnd {
            break;
        }
        if cx.out.bytes() >= OUT_BUDGET {
            f.send_due = true;
            break;
        }
        let len = f.mss.min(f.snd_wnd - flight).min(until_fin) as usize;
        let h = Header {
            src_port: f.peer.port(),
            dst_port: f.guest.port(),
            seq: f.snd_nxt,
            ack: f.rcv_nxt,
            flags: flags::ACK | flags::PSH,
            window: f.window_field(),
            mss: None,
            wscale: None,
        };
        let at = wtcp::payload_offset(&r, &h);
        let io = &mut *cx.io;
        let mut got: io::Result<usize> = Ok(0);
        cx.out.push_in_place(at + len, |buf| {
            got = io.peek(s, flight as usize, &mut buf[at..at + len]);
            match got {
                Ok(n) if n > 0 => wtcp::write_frame(buf, &r, &h, n.min(len)),
                _ => 0,
            }
        });
        let n = match got {
            Ok(n) => n.min(len),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return Next::Abort { rst_guest: true },
        };
        if n == 0 {
            f.exhausted = true;
            if f.host_eof && f.fin_seq.is_none() {
                f.fin_seq = Some(f.snd_nxt);
                if f.guest_fin && f.phase_deadline.is_none() {
                    f.phase_deadline = Some(cx.now + FIN_TIMEOUT);
                }
                continue;
            }
            break;
        }
        sent_any = true;
        let end = f.snd_nxt.wrapping_add(n as u32);
        if seq_gt(end, f.snd_max) {
            cx.counters.bytes_to_guest += u64::from(end.wrapping_sub(f.snd_max));
            f.snd_max = end;
        }
        f.snd_nxt = end;
        if n < len {
            f.exhausted = true;
            if !f.host_eof || f.fin_seq.is_some() {
                break;
            }
        }
    }
    if sent_any {
        f.ack_due = false;
        if was_idle || f.rto_at.is_none() {
            // A fresh flight: the timer starts now (not where a window probe left it).
            f.rto_at = Some(cx.now + rto(f.retries));
        }
    }
    Next::Keep
}

fn send_fin(cx: &mut Cx<'_>, f: &mut Flow) {
    emit(cx, f, flags::FIN | flags::ACK, f.snd_nxt);
    f.snd_nxt = f.snd_nxt.wrapping_add(1);
    if seq_gt(f.snd_nxt, f.snd_max) {
        f.snd_max = f.snd_nxt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_comparisons_wrap() {
        assert!(seq_lt(u32::MAX - 5, 3));
        assert!(seq_gt(3, u32::MAX - 5));
        assert!(!seq_lt(7, 7));
        assert!(seq_lt(0x7fff_fff0, 0x8000_0010));
    }

    #[test]
    fn retransmission_timeout_backs_off_to_a_cap() {
        assert_eq!(rto(0), Duration::from_secs(1));
        assert_eq!(rto(3), Duration::from_secs(8));
        assert_eq!(rto(6), RTO_MAX);
        assert_eq!(rto(255), RTO_MAX);
    }

    fn flow() -> Flow {
        let key = FlowKey {
            guest: "192.0.2.2:1".parse().unwrap(),
            peer: "192.0.2.1:2".parse().unwrap(),
        };
        let mut f = Flow::fresh(Phase::Established, SockRef(1), key, 1460, 0, Instant::ZERO);
        f.our_ws = 8;
        f.guest_offered_ws = true;
        f.rcv_nxt = 1000;
        f.set_right_edge(1000 + 65536);
        f.snd_una = 1;
        f.snd_nxt = 1;
        f.snd_max = 1;
        f.snd_wnd = 10_000;
        f
    }

    #[test]
    fn a_window_is_too_small_only_once_the_guests_data_filled_it() {
        let mut f = flow();
        f.mss = 65480;
        f.our_ws = 0;
        // A small send buffer: we never offered more than 40,000 bytes, less than a segment.
        f.set_right_edge(f.rcv_nxt.wrapping_add(40_000));
        f.max_offered = 40_000;
        assert!(!f.window_too_small(), "an idle flow's window is usable");
        // The guest sent 30,000 bytes into it: less than half the widest offer is left.
        f.rcv_nxt = f.rcv_nxt.wrapping_add(30_000);
        assert!(f.window_too_small());
        // A full segment always fits in a window of one segment or more.
        f.mss = 1460;
        assert!(!f.window_too_small());
    }

    #[test]
    fn room_measurements_back_off_to_a_cap() {
        assert_eq!(wupdate_poll_wait(0), WUPDATE_POLL);
        assert_eq!(wupdate_poll_wait(3), WUPDATE_POLL * 8);
        assert_eq!(wupdate_poll_wait(7), WUPDATE_POLL_MAX);
        assert_eq!(wupdate_poll_wait(u8::MAX), WUPDATE_POLL_MAX);
    }

    #[test]
    fn window_field_is_scaled_and_never_past_the_edge() {
        let mut f = flow();
        assert_eq!(f.window_field(), 256);
        f.rcv_nxt = f.right_edge.wrapping_add(10); // written past what we measured
        assert_eq!(f.window_field(), 0);
        f.our_ws = 0;
        f.right_edge = f.rcv_nxt.wrapping_add(1 << 20);
        assert_eq!(f.window_field(), u16::MAX);
    }

    #[test]
    fn readable_interest_follows_window_and_flight() {
        let mut f = flow();
        assert_eq!(f.wanted_interest(), (true, false));
        // Everything the socket holds in flight: wait for the guest's ACK.
        f.snd_nxt = 101;
        f.exhausted = true;
        assert_eq!(f.wanted_interest(), (false, false));
        // Window full.
        f.exhausted = false;
        f.snd_nxt = 1 + 10_000;
        assert_eq!(f.wanted_interest(), (false, false));
        // Stash waiting for room.
        f.snd_nxt = 1;
        f.stash = vec![1, 2, 3];
        assert_eq!(f.wanted_interest(), (true, true));
        // End of stream seen: nothing more to read.
        f.host_eof = true;
        assert_eq!(f.wanted_interest(), (false, true));
    }

    #[test]
    fn the_deadline_is_the_earliest_timer() {
        let mut f = flow();
        assert_eq!(f.deadline(), Some(Instant::ZERO + ACT_TIMEOUT));
        f.rto_at = Some(Instant::from_millis(5));
        f.phase_deadline = Some(Instant::from_millis(3));
        assert_eq!(f.deadline(), Some(Instant::from_millis(3)));
        f.phase = Phase::TimeWait;
        f.phase_deadline = Some(Instant::from_millis(9));
        f.rto_at = None;
        assert_eq!(f.deadline(), Some(Instant::from_millis(9)));
    }
}
