//! Frames as named fields, for comparing the engine's answers with recorded ones and saying
//! exactly where they differ. Decoded independently of the engine's own parser (a tester
//! that shares the parser it tests would share its bugs): the headers of Ethernet, ARP, IPv4,
//! IPv6 and its extension headers, TCP, UDP, BOOTP/DHCP and ICMP/ICMPv6 (echo included) are
//! read by `pnet_packet`, a parser other people wrote. What it doesn't decode, or would
//! decode only from well-formed input, is read here by hand: the bounds that make a frame
//! `truncated`, TCP options, DHCP, DHCPv6 and NDP options, and the DHCPv6 and NDP fixed
//! parts.
//!
//! Fields that legitimately differ between two runs of the same session are left out:
//! the IPv4 identification and every checksum (recomputed; our own output's checksums are
//! checked for validity separately, see [`checksum_errors`]), the IPv6 flow label, the TCP
//! window (it mirrors host socket buffers, which a replay doesn't have) and TCP timestamp
//! values. TCP sequence numbers are kept raw here; the replay compares them relative to the
//! first one each side sent on the flow (initial sequence numbers are random).

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use pnet_packet::arp::ArpPacket;
use pnet_packet::dhcp::DhcpPacket;
use pnet_packet::ethernet::EthernetPacket;
use pnet_packet::icmp::{echo_reply, echo_request, IcmpPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::{ExtensionPacket, Ipv6Packet};
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;

/// Transport-level facts about a frame, for the replay's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    },
    /// An ICMP or ICMPv6 echo request or reply; `msg` is the message from its type byte on.
    Echo {
        src: IpAddr,
        dst: IpAddr,
        reply: bool,
        id: u16,
        msg: Vec<u8>,
    },
    Other,
}

/// A decoded frame.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Compared fields in wire order: name and rendered value.
    pub fields: Vec<(String, String)>,
    /// One line for humans ("TCP 203.0.113.10:8000 > 198.51.100.2:49868 [S.]").
    pub summary: String,
    pub l4: Option<L4>,
}

impl Decoded {
    fn push(&mut self, name: impl Into<String>, value: impl ToString) {
        self.fields.push((name.into(), value.to_string()));
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Bytes as hex, shortened in the middle when long.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    let shown: Vec<u8> = if b.len() > 48 {
        b[..24].iter().chain(&b[b.len() - 8..]).copied().collect()
    } else {
        b.to_vec()
    };
    for (i, x) in shown.iter().enumerate() {
        if b.len() > 48 && i == 24 {
            let _ = write!(s, "..");
        }
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > 48 {
        let _ = write!(s, " ({} bytes)", b.len());
    }
    s
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

fn tcp_flags(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x10, '.'),
        (0x40, 'E'),
        (0x80, 'W'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Decodes an Ethernet frame. Anything cut short ends the field list with a `truncated`
/// field, which compares like any other.
pub fn decode(frame: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let Some(eth) = EthernetPacket::new(frame) else {
        d.push("truncated", format!("frame of {} bytes", frame.len()));
        d.summary = format!("runt frame of {} bytes", frame.len());
        return d;
    };
    d.push("eth.dst", eth.get_destination());
    d.push("eth.src", eth.get_source());
    let ethertype = eth.get_ethertype().0;
    d.push("eth.type", format!("{ethertype:#06x}"));
    let body = &frame[14..];
    match ethertype {
        0x0806 => arp(&mut d, body),
        0x0800 => ipv4(&mut d, body),
        0x86dd => ipv6(&mut d, body),
        _ => {
            d.push("eth.payload", hex(body));
            d.summary = format!("ethertype {ethertype:#06x}");
        }
    }
    d
}

fn arp(d: &mut Decoded, b: &[u8]) {
    // Ethernet and IPv4 addresses: the only ARP we meet, and all pnet reads.
    let Some(p) = ArpPacket::new(b) else {
        d.push("truncated", format!("ARP of {} bytes", b.len()));
        d.summary = "ARP (truncated)".into();
        return;
    };
    let op = p.get_operation().0;
    d.push(
        "arp.hardware",
        format!(
            "{:04x}{:04x}{:02x}{:02x}",
            p.get_hardware_type().0,
            p.get_protocol_type().0,
            p.get_hw_addr_len(),
            p.get_proto_addr_len()
        ),
    );
    d.push("arp.op", op);
    let sender_mac = p.get_sender_hw_addr();
    let (sender, target) = (p.get_sender_proto_addr(), p.get_target_proto_addr());
    d.push("arp.sender_mac", sender_mac);
    d.push("arp.sender_ip", sender);
    d.push("arp.target_mac", p.get_target_hw_addr());
    d.push("arp.target_ip", target);
    d.summary = match op {
        1 => format!("ARP who-has {target} tell {sender}"),
        2 => format!("ARP {sender} is-at {sender_mac}"),
        _ => format!("ARP op {op}"),
    };
}

fn ipv4(d: &mut Decoded, b: &[u8]) {
    let Some(ip) = Ipv4Packet::new(b) else {
        d.push("truncated", format!("IPv4 header of {} bytes", b.len()));
        d.summary = "IPv4 (truncated)".into();
        return;
    };
    let ihl = usize::from(ip.get_header_length()) * 4;
    let total = usize::from(ip.get_total_length());
    let version_ihl = ip.get_version() << 4 | ip.get_header_length();
    let flags_fragment = u16::from(ip.get_flags()) << 13 | ip.get_fragment_offset();
    let protocol = ip.get_next_level_protocol().0;
    d.push("ip.version_ihl", format!("{version_ihl:#04x}"));
    d.push("ip.tos", ip.get_dscp() << 2 | ip.get_ecn());
    d.push("ip.total_length", total);
    d.push("ip.flags_fragment", format!("{flags_fragment:#06x}"));
    d.push("ip.ttl", ip.get_ttl());
    d.push("ip.protocol", protocol);
    let src = IpAddr::V4(ip.get_source());
    let dst = IpAddr::V4(ip.get_destination());
    d.push("ip.src", src);
    d.push("ip.dst", dst);
    // The lengths are checked here: pnet trusts them.
    if ihl < 20 || ihl > b.len() || total < ihl || total > b.len() {
        d.push("truncated", format!("IPv4 packet of {} bytes", b.len()));
        d.summary = format!("IPv4 {src} > {dst} (truncated)");
        return;
    }
    if ihl > 20 {
        d.push("ip.options", hex(&b[20..ihl]));
    }
    if flags_fragment & 0x3fff != 0 {
        d.push("ip.fragment", hex(&b[ihl..total]));
        d.summary = format!("IPv4 {src} > {dst} fragment");
        return;
    }
    transport(d, protocol, src, dst, &b[ihl..total]);
}

fn ipv6(d: &mut Decoded, b: &[u8]) {
    let Some(ip) = Ipv6Packet::new(b) else {
        d.push("truncated", format!("IPv6 header of {} bytes", b.len()));
        d.summary = "IPv6 (truncated)".into();
        return;
    };
    let plen = usize::from(ip.get_payload_length());
    d.push("ip6.traffic_class", ip.get_traffic_class());
    d.push("ip6.payload_length", plen);
    d.push("ip6.next_header", ip.get_next_header().0);
    d.push("ip6.hop_limit", ip.get_hop_limit());
    let src = IpAddr::V6(ip.get_source());
    let dst = IpAddr::V6(ip.get_destination());
    d.push("ip6.src", src);
    d.push("ip6.dst", dst);
    if 40 + plen > b.len() {
        d.push("truncated", format!("IPv6 packet of {} bytes", b.len()));
        d.summary = format!("IPv6 {src} > {dst} (truncated)");
        return;
    }
    let mut next = ip.get_next_header().0;
    let mut rest = &b[40..40 + plen];
    // Hop-by-hop, routing and destination options headers (MLD reports carry one).
    while matches!(next, 0 | 43 | 60) {
        let Some(ext) = ExtensionPacket::new(rest) else {
            break;
        };
        let len = (usize::from(ext.get_hdr_ext_len()) + 1) * 8;
        if len > rest.len() {
            break;
        }
        d.push(format!("ip6.ext{next}"), hex(&rest[..len]));
        next = ext.get_next_header().0;
        rest = &rest[len..];
    }
    transport(d, next, src, dst, rest);
}

fn transport(d: &mut Decoded, proto: u8, src: IpAddr, dst: IpAddr, b: &[u8]) {
    match proto {
        6 => tcp(d, src, dst, b),
        17 => udp(d, src, dst, b),
        1 => icmp(d, false, src, dst, b),
        58 => icmp(d, true, src, dst, b),
        _ => {
            d.push("ip.payload", hex(b));
            d.summary = format!("IP {src} > {dst} protocol {proto}");
        }
    }
}

fn tcp(d: &mut Decoded, src: IpAddr, dst: IpAddr, b: &[u8]) {
    let seg = TcpPacket::new(b);
    let off = seg
        .as_ref()
        .map_or(0, |s| usize::from(s.get_data_offset()) * 4);
    let Some(seg) = seg.filter(|_| off >= 20 && off <= b.len()) else {
        d.push("truncated", format!("TCP segment of {} bytes", b.len()));
        d.summary = format!("TCP {src} > {dst} (truncated)");
        return;
    };
    let (sport, dport) = (seg.get_source(), seg.get_destination());
    let (seq, ack, flags) = (
        seg.get_sequence(),
        seg.get_acknowledgement(),
        seg.get_flags(),
    );
    d.push("tcp.sport", sport);
    d.push("tcp.dport", dport);
    d.push("tcp.seq", seq);
    d.push("tcp.ack", ack);
    d.push("tcp.data_offset", off);
    d.push("tcp.flags", format!("[{}]", tcp_flags(flags)));
    d.push("tcp.urgent", seg.get_urgent_ptr());
    // By hand: pnet reads options only when every length is right.
    d.push("tcp.options", tcp_options(&b[20..off]));
    let payload = &b[off..];
    d.push("tcp.payload_length", payload.len());
    d.push("tcp.payload", hex(payload));
    let (src, dst) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
    d.summary = format!(
        "TCP {src} > {dst} [{}] seq {seq} ack {ack} len {}",
        tcp_flags(flags),
        payload.len()
    );
    d.l4 = Some(L4::Tcp {
        src,
        dst,
        seq,
        ack,
        flags,
        payload: payload.to_vec(),
    });
}

/// TCP options without timestamp values: "mss 65480,sackOK,ts,nop,wscale 8".
fn tcp_options(mut o: &[u8]) -> String {
    let mut out = Vec::new();
    while let Some(&kind) = o.first() {
        match kind {
            0 => {
                out.push("eol".to_owned());
                break;
            }
            1 => {
                out.push("nop".to_owned());
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let len = usize::from(o.get(1).copied().unwrap_or(0));
        if len < 2 || len > o.len() {
            out.push(format!("bad option {kind}"));
            break;
        }
        let v = &o[2..len];
        out.push(match (kind, len) {
            (2, 4) => format!("mss {}", be16(v, 0).unwrap()),
            (3, 3) => format!("wscale {}", v[0]),
            (4, 2) => "sackOK".to_owned(),
            (5, _) => format!("sack {}", (len - 2) / 8),
            (8, 10) => "ts".to_owned(),
            _ => format!("opt{kind} {}", hex(v)),
        });
        o = &o[len..];
    }
    out.join(",")
}

fn udp(d: &mut Decoded, src: IpAddr, dst: IpAddr, b: &[u8]) {
    let datagram = UdpPacket::new(b);
    let len = datagram.as_ref().map_or(0, |u| usize::from(u.get_length()));
    let Some(datagram) = datagram.filter(|_| len >= 8 && len <= b.len()) else {
        d.push("truncated", format!("UDP datagram of {} bytes", b.len()));
        d.summary = format!("UDP {src} > {dst} (truncated)");
        return;
    };
    let (sport, dport) = (datagram.get_source(), datagram.get_destination());
    d.push("udp.sport", sport);
    d.push("udp.dport", dport);
    d.push("udp.length", len);
    let payload = &b[8..len];
    let (src, dst) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
    d.summary = format!("UDP {src} > {dst} len {}", payload.len());
    match (sport, dport) {
        (67, 68) | (68, 67) => dhcp(d, payload),
        (547, 546) | (546, 547) => dhcpv6(d, payload),
        _ => d.push("udp.payload", hex(payload)),
    }
    d.l4 = Some(L4::Udp {
        src,
        dst,
        payload: payload.to_vec(),
    });
}

fn dhcp(d: &mut Decoded, b: &[u8]) {
    // pnet reads the BOOTP header; the magic cookie and the options are read here.
    let Some(m) = DhcpPacket::new(b).filter(|_| be32(b, 236) == Some(0x6382_5363)) else {
        d.push("dhcp.message", hex(b));
        return;
    };
    d.summary.push_str(" DHCP");
    d.push(
        "dhcp.op_htype_hlen_hops",
        format!(
            "{:02x}{:02x}{:02x}{:02x}",
            m.get_op().0,
            m.get_htype().0,
            m.get_hlen(),
            m.get_hops()
        ),
    );
    d.push("dhcp.xid", format!("{:#010x}", m.get_xid()));
    d.push("dhcp.secs", m.get_secs());
    d.push("dhcp.flags", format!("{:#06x}", m.get_flags()));
    d.push("dhcp.ciaddr", m.get_ciaddr());
    d.push("dhcp.yiaddr", m.get_yiaddr());
    d.push("dhcp.siaddr", m.get_siaddr());
    d.push("dhcp.giaddr", m.get_giaddr());
    let mut chaddr = m.get_chaddr().octets().to_vec();
    chaddr.extend_from_slice(&m.get_chaddr_pad());
    d.push("dhcp.chaddr", hex(&chaddr));
    let mut sname_file = m.get_sname();
    sname_file.extend_from_slice(&m.get_file());
    d.push("dhcp.sname_file", hex(&sname_file));
    // Options by code: their order is the server's choice (clients look them up by code).
    let mut opts: Vec<(u8, String)> = Vec::new();
    let mut o = &b[240..];
    while let Some(&code) = o.first() {
        match code {
            0 => {
                o = &o[1..];
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = o.get(1) else {
            d.push("dhcp.option", format!("{code} without a length"));
            break;
        };
        let len = usize::from(len);
        let Some(v) = o.get(2..2 + len) else {
            d.push("dhcp.option", format!("{code} cut short"));
            break;
        };
        if code == 53 {
            let _ = write!(d.summary, " type {}", v.first().copied().unwrap_or(0));
        }
        opts.push((code, hex(v)));
        o = &o[2 + len..];
    }
    opts.sort_by_key(|(code, _)| *code);
    for (code, v) in opts {
        d.push(format!("dhcp.option {code}"), v);
    }
}

fn dhcpv6(d: &mut Decoded, b: &[u8]) {
    if b.len() < 4 {
        d.push("dhcpv6.message", hex(b));
        return;
    }
    let _ = write!(d.summary, " DHCPv6 type {}", b[0]);
    d.push("dhcpv6.msg_type", b[0]);
    d.push("dhcpv6.transaction_id", hex(&b[1..4]));
    let mut opts: Vec<(u16, String)> = Vec::new();
    let mut o = &b[4..];
    while o.len() >= 4 {
        let code = be16(o, 0).unwrap();
        let len = usize::from(be16(o, 2).unwrap());
        let Some(v) = o.get(4..4 + len) else {
            opts.push((code, "cut short".into()));
            o = &[];
            break;
        };
        // A server identifier that is a DUID-LLT (RFC 8415 section 11.2) carries the time
        // it was made: the same server gives a new one each run.
        let shown = if code == 2 && v.len() >= 8 && be16(v, 0) == Some(1) {
            format!("{}(time){}", hex(&v[..4]), hex(&v[8..]))
        } else {
            hex(v)
        };
        opts.push((code, shown));
        o = &o[4 + len..];
    }
    opts.sort_by_key(|(code, _)| *code);
    for (code, v) in opts {
        d.push(format!("dhcpv6.option {code}"), v);
    }
    if !o.is_empty() {
        d.push("dhcpv6.trailing", hex(o));
    }
}

/// An echo message's identifier and sequence number, as pnet reads them for its type.
fn echo_id_seq(v6: bool, ty: u8, b: &[u8]) -> Option<(u16, u16)> {
    Some(match (v6, ty) {
        (false, 8) => {
            let m = echo_request::EchoRequestPacket::new(b)?;
            (m.get_identifier(), m.get_sequence_number())
        }
        (false, 0) => {
            let m = echo_reply::EchoReplyPacket::new(b)?;
            (m.get_identifier(), m.get_sequence_number())
        }
        (true, 128) => {
            let m = icmpv6::echo_request::EchoRequestPacket::new(b)?;
            (m.get_identifier(), m.get_sequence_number())
        }
        (true, 129) => {
            let m = icmpv6::echo_reply::EchoReplyPacket::new(b)?;
            (m.get_identifier(), m.get_sequence_number())
        }
        _ => return None,
    })
}

fn icmp(d: &mut Decoded, v6: bool, src: IpAddr, dst: IpAddr, b: &[u8]) {
    let p = if v6 { "icmp6" } else { "icmp" };
    let type_code = if v6 {
        Icmpv6Packet::new(b).map(|m| (m.get_icmpv6_type().0, m.get_icmpv6_code().0))
    } else {
        IcmpPacket::new(b).map(|m| (m.get_icmp_type().0, m.get_icmp_code().0))
    };
    let Some((ty, code)) = type_code else {
        d.push("truncated", format!("ICMP message of {} bytes", b.len()));
        d.summary = format!("ICMP {src} > {dst} (truncated)");
        return;
    };
    d.push(format!("{p}.type"), ty);
    d.push(format!("{p}.code"), code);
    d.summary = format!("{} {src} > {dst} type {ty}", p.to_uppercase());
    if let Some((id, seq)) = echo_id_seq(v6, ty, b) {
        d.push(format!("{p}.echo_id"), id);
        d.push(format!("{p}.echo_seq"), seq);
        d.push(format!("{p}.echo_data"), hex(&b[8..]));
        let reply = ty == 0 || ty == 129;
        let _ = write!(
            d.summary,
            " echo {} id {id} seq {seq}",
            if reply { "reply" } else { "request" },
        );
        d.l4 = Some(L4::Echo {
            src,
            dst,
            reply,
            id,
            msg: b.to_vec(),
        });
        return;
    }
    // NDP: the fixed part, then each option on its own.
    let fixed = match (v6, ty) {
        (true, 133) => Some(8),
        (true, 134) => Some(16),
        (true, 135 | 136) => Some(24),
        (true, 137) => Some(40),
        _ => None,
    };
    match fixed {
        Some(fixed) if b.len() >= fixed => {
            d.push("ndp.fields", hex(&b[4..fixed]));
            let mut opts: Vec<(u8, String)> = Vec::new();
            let mut o = &b[fixed..];
            while o.len() >= 2 {
                let (kind, len) = (o[0], usize::from(o[1]) * 8);
                if len == 0 || len > o.len() {
                    opts.push((kind, format!("bad length: {}", hex(o))));
                    o = &[];
                    break;
                }
                opts.push((kind, hex(&o[2..len])));
                o = &o[len..];
            }
            // Options by type: their order is the sender's choice.
            opts.sort_by_key(|(kind, _)| *kind);
            for (kind, v) in opts {
                d.push(format!("ndp.option {kind}"), v);
            }
            if !o.is_empty() {
                d.push("ndp.trailing", hex(o));
            }
        }
        _ => d.push(format!("{p}.body"), hex(&b[4..])),
    }
}

/// Internet checksum (RFC 1071) over `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where a frame's TCP segment is, and its pseudo-header: for rewriting it.
fn tcp_span(frame: &[u8]) -> Option<(std::ops::Range<usize>, Vec<u8>)> {
    let ip = frame.get(14..)?;
    match be16(frame, 12)? {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            if ip[9] != 6 || ihl < 20 || total < ihl + 20 || total > ip.len() {
                return None;
            }
            if be16(ip, 6)? & 0x3fff != 0 {
                return None;
            }
            let mut pseudo = ip[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&((total - ihl) as u16).to_be_bytes());
            Some((14 + ihl..14 + total, pseudo))
        }
        0x86dd => {
            let plen = usize::from(be16(ip, 4)?);
            if *ip.get(6)? != 6 || plen < 20 || 40 + plen > ip.len() {
                return None;
            }
            let mut pseudo = ip[8..40].to_vec();
            pseudo.extend_from_slice(&(plen as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            Some((54..54 + plen, pseudo))
        }
        _ => None,
    }
}

/// Adds `delta` to a TCP segment's acknowledgment number (if it has the ACK flag) and to its
/// SACK blocks' edges: moves the guest's view of our sequence space from one run's initial
/// sequence number to another's. A valid checksum is recomputed; an invalid one stays
/// invalid.
pub fn shift_tcp_ack(frame: &mut [u8], delta: u32) {
    let Some((span, pseudo)) = tcp_span(frame) else {
        return;
    };
    let valid = checksum(&[&pseudo, &frame[span.clone()]]) == 0;
    let tcp = &mut frame[span.clone()];
    let off = usize::from(tcp[12] >> 4) * 4;
    if off < 20 || off > tcp.len() {
        return;
    }
    let add = |b: &mut [u8]| {
        let v = u32::from_be_bytes(b[..4].try_into().unwrap()).wrapping_add(delta);
        b[..4].copy_from_slice(&v.to_be_bytes());
    };
    if tcp[13] & TCP_ACK != 0 {
        add(&mut tcp[8..12]);
    }
    let mut at = 20;
    while at < off {
        match tcp[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = usize::from(*tcp.get(at + 1).unwrap_or(&0));
                if len < 2 || at + len > off {
                    break;
                }
                if kind == 5 {
                    let mut edge = at + 2;
                    while edge + 4 <= at + len {
                        add(&mut tcp[edge..edge + 4]);
                        edge += 4;
                    }
                }
                at += len;
            }
        }
    }
    if valid {
        tcp[16..18].copy_from_slice(&[0, 0]);
        let sum = checksum(&[&pseudo, tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Checksums that don't verify in a frame (IPv4 header, TCP, UDP, ICMP, ICMPv6): for our
/// own output, where a wrong checksum is a bug whatever the recording says.
pub fn checksum_errors(frame: &[u8]) -> Vec<&'static str> {
    let mut errors = Vec::new();
    let Some(ethertype) = be16(frame, 12) else {
        return errors;
    };
    let ip = &frame[14..];
    let (proto, l4, pseudo): (u8, &[u8], Vec<u8>) = match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2).unwrap());
            if ihl < 20 || total < ihl || total > ip.len() {
                return errors;
            }
            if checksum(&[&ip[..ihl]]) != 0 {
                errors.push("ip.checksum");
            }
            if be16(ip, 6).unwrap() & 0x3fff != 0 {
                return errors;
            }
            let l4 = &ip[ihl..total];
            let mut pseudo = ip[12..20].to_vec();
            pseudo.extend_from_slice(&[0, ip[9]]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            (ip[9], l4, pseudo)
        }
        0x86dd if ip.len() >= 40 => {
            let plen = usize::from(be16(ip, 4).unwrap());
            if 40 + plen > ip.len() {
                return errors;
            }
            let l4 = &ip[40..40 + plen];
            let mut pseudo = ip[8..40].to_vec();
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, ip[6]]);
            (ip[6], l4, pseudo)
        }
        _ => return errors,
    };
    let (name, min, with_pseudo) = match proto {
        6 => ("tcp.checksum", 20, true),
        // Zero means "none" over IPv4 only.
        17 if ethertype == 0x0800 && be16(l4, 6) == Some(0) => return errors,
        17 => ("udp.checksum", 8, true),
        1 => ("icmp.checksum", 4, false),
        58 => ("icmp6.checksum", 4, true),
        _ => return errors,
    };
    let sum = if with_pseudo {
        checksum(&[&pseudo, l4])
    } else {
        checksum(&[l4])
    };
    if l4.len() >= min && sum != 0 {
        errors.push(name);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header() {
        // RFC 1071's example words sum to 0xddf2; their checksum is its complement.
        let words = [0x00u8, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&words]), !0xddf2);
        assert_eq!(checksum(&[&words[..3], &words[3..]]), !0xddf2);
    }

    #[test]
    fn short_and_garbage_frames_decode_without_panicking() {
        for len in 0..80 {
            for fill in [0u8, 0xff, 0x45, 0x60] {
                let mut f = vec![fill; len];
                if len >= 14 {
                    f[12..14].copy_from_slice(&[0x08, 0x00]);
                }
                let _ = decode(&f);
                let _ = checksum_errors(&f);
            }
        }
    }
}
