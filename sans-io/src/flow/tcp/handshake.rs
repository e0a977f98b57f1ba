//! Opening connections, both ways: a guest SYN becomes a host connect and our SYN-ACK; an
//! accepted host connection becomes our SYN to the guest. Both end in [`Flow`]s established
//! by the guest's ACK or SYN-ACK.

use std::net::{IpAddr, SocketAddr};

use super::emit::{emit, rst_reply, send_syn};
use super::flow::{mss_for, update_interest, Flow, SynTerms};
use super::seq::{SegmentSeq, SeqNum};
use super::timers::Timer;
use super::to_guest::rto;
use super::to_host::StashBudget;
use super::tombstones::Tombstones;
use super::window::refresh_window;
use super::{established_segment, unicast, Cx, FlowKey, Next, Phase, Tcp, CONNECT_TIMEOUT};
use crate::flow::Proto;
use crate::flow::{Bind, SockRef};
use crate::fwd::nat;
use crate::wire::tcp::{flags, Segment};

impl Tcp {
    pub(super) fn open_outbound(&mut self, cx: &mut Cx<'_>, key: FlowKey, seg: &Segment<'_>) {
        let (src, dst) = (key.guest.ip(), key.peer.ip());
        if !unicast(src) || !unicast(dst) || seg.dst_port == 0 || seg.src_port == 0 {
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
        let our_mss = u32::from(mss_for(cx.config, v6));
        let terms = SynTerms::of(seg, v6, our_mss);
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
        let s = match cx.io.tcp_connect(target, bind, Some(terms.mss as u16)) {
            Ok(s) => s,
            Err(_) => {
                cx.counters.connect_refused += 1;
                self.tombstones.bury(cx.now, key, seg.seq_num());
                rst_reply(cx, key, seg);
                return;
            }
        };
        let iss = SeqNum::from(cx.rng.next_u64() as u32);
        let rcv_nxt = seg.seq_num() + 1;
        let mut flow = Flow {
            guest_offered_ws: terms.offered_ws,
            rcv_nxt,
            right_edge: rcv_nxt,
            snd_wnd: u32::from(seg.window),
            ..Flow::fresh(Phase::Connecting, s, key, our_mss, iss, cx.now)
        };
        flow.negotiate(terms);
        flow.timers.start(Timer::PhaseEnd, cx.now + CONNECT_TIMEOUT);
        if self.add(cx, key, flow) {
            cx.counters.opened += 1;
        } else {
            cx.io.close(s, true);
            rst_reply(cx, key, seg);
        }
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
        let to = cx.forwards.map_in(Proto::Tcp, local.ip(), local.port());
        let Some((target, port)) = to.filter(|&(_, p)| p != 0) else {
            cx.counters.unforwarded += 1;
            cx.io.close(s, true);
            return;
        };
        // Local traffic in pasta skips the guest path: the driver relays it into the namespace.
        if let Some(inside) = nat::local_bypass(cx.config, cx.guest, peer, (target, port)) {
            cx.counters.handed_over += 1;
            cx.io.hand_over(s, inside);
            return;
        }
        let Some((seen, guest_ip)) = nat::to_guest(cx.config, cx.guest, peer, local.ip(), target)
        else {
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
        let iss = SeqNum::from(cx.rng.next_u64() as u32);
        let mut flow = Flow {
            // Our SYN takes a sequence number; what the guest will offer is not known yet.
            guest_offered_ws: true,
            snd_nxt: iss + 1,
            snd_max: iss + 1,
            ..Flow::fresh(Phase::SynSent, s, key, our_mss, iss, cx.now)
        };
        flow.timers.start(Timer::Retransmit, cx.now + rto(0));
        refresh_window(cx, &mut flow);
        send_syn(cx, &flow, false);
        update_interest(cx, &mut flow);
        if self.add(cx, key, flow) {
            cx.counters.accepted += 1;
        } else {
            cx.io.close(s, true);
        }
    }

    /// Puts a new flow in the table, tied to its socket. False if it doesn't fit.
    fn add(&mut self, cx: &mut Cx<'_>, key: FlowKey, flow: Flow) -> bool {
        let sock = flow.sock;
        let Ok(idx) = self.table.insert(key, flow) else {
            return false;
        };
        if let Some(s) = sock {
            self.table.bind_sock(idx, s);
        }
        cx.counters.flows = self.table.len() as u64;
        self.reschedule(idx);
        true
    }
}

/// A segment while our host connect is in progress: only a RST matters.
pub(super) fn connecting_segment(cx: &mut Cx<'_>, f: &mut Flow, seg: &Segment<'_>) -> Next {
    if seg.has(flags::RST) && seg.seq_num() == f.rcv_nxt {
        cx.counters.resets_received += 1;
        return Next::Abort { rst_guest: false };
    }
    // Retransmitted SYNs wait for the connect to finish.
    Next::Keep
}

/// A segment after our SYN-ACK: the guest's ACK establishes the flow (and may carry data).
pub(super) fn syn_ack_sent_segment(
    cx: &mut Cx<'_>,
    f: &mut Flow,
    key: FlowKey,
    seg: &Segment<'_>,
    stashes: &mut StashBudget,
) -> Next {
    let syn = seg.has(flags::SYN);
    let ack = seg.has(flags::ACK);
    if seg.has(flags::RST) {
        if seg.seq_num() == f.rcv_nxt {
            cx.counters.resets_received += 1;
            return Next::Abort { rst_guest: false };
        }
        return Next::Keep;
    }
    if syn && !ack {
        if seg.seq_num() + 1 == f.rcv_nxt {
            send_syn(cx, f, true);
        }
        return Next::Keep;
    }
    if !ack || syn {
        return Next::Keep;
    }
    if seg.ack_num() != f.iss + 1 {
        rst_reply(cx, key, seg);
        return Next::Keep;
    }
    f.establish(seg.ack_num(), u32::from(seg.window) << f.guest_ws, cx.now);
    established_segment(cx, f, seg, stashes, None)
}

/// A segment after our SYN to the guest: its SYN-ACK establishes the flow.
pub(super) fn syn_sent_segment(cx: &mut Cx<'_>, f: &mut Flow, seg: &Segment<'_>) -> Next {
    let ack = seg.has(flags::ACK);
    if seg.has(flags::RST) {
        if ack && seg.ack_num() == f.iss + 1 {
            cx.counters.resets_received += 1;
            return Next::Abort { rst_guest: false };
        }
        return Next::Keep;
    }
    if !(seg.has(flags::SYN) && ack) || seg.ack_num() != f.iss + 1 {
        return Next::Keep;
    }
    f.negotiate(SynTerms::of(seg, f.guest.is_ipv6(), f.rcv_mss));
    f.rcv_nxt = seg.seq_num() + 1;
    f.set_right_edge(f.rcv_nxt);
    // The window is never scaled in a SYN.
    f.establish(seg.ack_num(), u32::from(seg.window), cx.now);
    f.ack_due = true;
    Next::Keep
}

/// Our host connect succeeded: the SYN-ACK to the guest.
pub(super) fn on_connected(cx: &mut Cx<'_>, f: &mut Flow) -> Next {
    if f.phase == Phase::Connecting {
        f.phase = Phase::SynAckSent;
        f.timers.stop(Timer::PhaseEnd);
        f.snd_nxt = f.iss + 1;
        f.snd_max = f.snd_nxt;
        refresh_window(cx, f);
        send_syn(cx, f, true);
        f.retries = 0;
        f.timers.start(Timer::Retransmit, cx.now + rto(0));
    }
    Next::Keep
}

/// The socket failed: a refused connect is a RST to the guest's SYN, remembered; anything
/// later resets both sides.
pub(super) fn on_socket_error(cx: &mut Cx<'_>, f: &mut Flow, tombstones: &mut Tombstones) -> Next {
    if f.phase == Phase::Connecting {
        refuse_connect(cx, f, tombstones)
    } else {
        Next::Abort { rst_guest: true }
    }
}

/// Our host connect failed or timed out: the guest, still in SYN-SENT, gets a RST with an
/// ACK of its SYN, and the attempt is remembered.
pub(super) fn refuse_connect(cx: &mut Cx<'_>, f: &mut Flow, tombstones: &mut Tombstones) -> Next {
    cx.counters.connect_refused += 1;
    emit(cx, f, flags::RST | flags::ACK, SeqNum::default());
    tombstones.bury_attempt(cx.now, f);
    cx.counters.resets_sent += 1;
    Next::Abort { rst_guest: false }
}
