//! Frames to the guest: control segments, ACKs, SYNs, resets and window probes. Data
//! segments are built in place by `to_guest`, around the bytes peeked into them.

use std::net::IpAddr;

use super::flow::Flow;
use super::seq::{SegmentSeq, SeqNum};
use super::{Cx, FlowKey, OUR_WSCALE};
use crate::wire::build::Route;
use crate::wire::tcp::{self as wtcp, flags, Header, Segment};
use crate::wire::MacAddr;

fn guest_mac(cx: &Cx<'_>) -> MacAddr {
    cx.guest
        .mac
        .or(cx.config.ns_mac)
        .unwrap_or(MacAddr::BROADCAST)
}

pub(super) fn route(cx: &Cx<'_>, peer: IpAddr, guest: IpAddr) -> Route {
    Route {
        src_mac: cx.config.our_mac,
        dst_mac: guest_mac(cx),
        src: peer,
        dst: guest,
    }
}

/// A RST answering a segment no flow wants (RFC 9293 section 3.10.7.1).
pub(super) fn rst_reply(cx: &mut Cx<'_>, key: FlowKey, seg: &Segment<'_>) {
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
            ack: (seg.seq_num() + seg.seq_len()).into(),
            flags: flags::RST | flags::ACK,
            ..Header::default()
        }
    };
    let r = route(cx, key.peer.ip(), key.guest.ip());
    wtcp::frame(cx.out, &r, &h, &[]);
    cx.counters.resets_sent += 1;
}

/// A control segment from `f` with `flags` at `seq` (`ack` is `rcv_nxt`).
pub(super) fn emit(cx: &mut Cx<'_>, f: &Flow, fl: u8, seq: SeqNum) {
    let h = Header {
        src_port: f.peer.port(),
        dst_port: f.guest.port(),
        seq: seq.into(),
        ack: if fl & flags::ACK != 0 {
            f.rcv_nxt.into()
        } else {
            0
        },
        flags: fl,
        window: f.window_field(),
        mss: None,
        wscale: None,
    };
    let r = route(cx, f.peer.ip(), f.guest.ip());
    wtcp::frame(cx.out, &r, &h, &[]);
}

pub(super) fn send_ack(cx: &mut Cx<'_>, f: &mut Flow) {
    emit(cx, f, flags::ACK, f.snd_nxt);
    f.ack_due = false;
    f.ack_sent();
    if f.window_too_small() {
        f.want_wupdate = true;
    }
}

/// Our SYN (inbound) or SYN-ACK (outbound).
pub(super) fn send_syn(cx: &mut Cx<'_>, f: &Flow, ack: bool) {
    // Never scaled in a SYN.
    let window = f.window_bytes().min(u32::from(u16::MAX)) as u16;
    let h = Header {
        src_port: f.peer.port(),
        dst_port: f.guest.port(),
        seq: f.iss.into(),
        ack: if ack { f.rcv_nxt.into() } else { 0 },
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
pub(super) fn window_probe(cx: &mut Cx<'_>, f: &Flow) {
    emit(cx, f, flags::ACK, f.snd_una - 1);
}
