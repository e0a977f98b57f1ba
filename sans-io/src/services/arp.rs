//! ARP (RFC 826): we answer for every IPv4 address on the guest's link except its own.
//!
//! # Theory of operation
//!
//! The guest's link has exactly two nodes: the guest and us. Whatever IPv4 address the guest
//! resolves — its gateway, a neighbour it believes is on its subnet, the host's address — the
//! frame has to come to us anyway, so we answer every ARP request with our own MAC
//! (`config.our_mac`). Three kinds of request are left unanswered:
//!
//! - **probes** (sender IP 0.0.0.0, RFC 5227 section 2.1.1): the guest is checking that the
//!   address it wants is free; an answer would tell it the address is taken;
//! - **announcements** (sender IP == target IP, RFC 5227 section 2.3, "gratuitous ARP"): the
//!   guest is telling the link about its own address, not asking;
//! - **requests for the guest's own address** (the configured one, or the one it was last seen
//!   using): answering would make the guest see a conflict with itself.
//!
//! Targets that no host can own (0.0.0.0, broadcast, multicast) are not answered either.
//! Replies (op 2) from the guest and ARP for other hardware or protocol types are ignored. The
//! service keeps no state: the engine learns the guest's MAC and address from its frames.

use super::{Ctx, Outcome};
use crate::wire::arp::{ArpPacket, OP_REPLY, OP_REQUEST};
use crate::wire::build;
use crate::wire::parse::{ethertype, Ethernet};

/// Answers an ARP request from the guest (see the module documentation for which).
pub fn handle(ctx: &mut Ctx, eth: &Ethernet) -> Outcome {
    let Some(ip4) = ctx.config.ip4.as_ref() else {
        return Outcome::Ignored;
    };
    let req = match ArpPacket::parse(eth.payload) {
        Ok(Some(req)) => req,
        Ok(None) => return Outcome::Ignored,
        Err(why) => return Outcome::Malformed(why.into()),
    };
    if req.op != OP_REQUEST {
        return Outcome::Ignored;
    }
    // Probe or announcement: the guest is claiming an address, not looking for a neighbour.
    if req.spa.is_unspecified() || req.spa == req.tpa {
        return Outcome::Ignored;
    }
    // Answering for the guest's own address would look like an address conflict to it.
    if req.tpa == ip4.addr || ctx.guest.addr4 == Some(req.tpa) {
        return Outcome::Ignored;
    }
    if req.tpa.is_unspecified() || req.tpa.is_broadcast() || req.tpa.is_multicast() {
        return Outcome::Ignored;
    }
    // The reply goes to the requester only (RFC 826, "Packet Reception"); a sender hardware
    // address we can't unicast to leaves nobody to answer.
    if !req.sha.is_unicast() {
        return Outcome::Ignored;
    }
    let reply = ArpPacket {
        op: OP_REPLY,
        sha: ctx.config.our_mac,
        spa: req.tpa,
        tha: req.sha,
        tpa: req.spa,
    };
    let our_mac = ctx.config.our_mac;
    ctx.out.push(|buf| {
        build::ethernet(buf, req.sha, our_mac, ethertype::ARP);
        reply.write(buf);
    });
    Outcome::Answered
}
