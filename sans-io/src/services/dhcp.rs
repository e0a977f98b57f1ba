//! DHCP (RFC 2131, options RFC 2132 and later): one lease, the guest's configured address.
//!
//! # Theory of operation
//!
//! There is one client (the guest) and one address to give it (`config.ip4.addr`), so the
//! server keeps no lease database: every answer is computed from the request and the
//! [`Config`]. A guest message is parsed into a [`DhcpMessage`] (the BOOTP header, the magic
//! cookie, then the options, repeated ones concatenated as RFC 3396 says), and answered:
//!
//! | the guest sends                          | we answer                                  |
//! |------------------------------------------|--------------------------------------------|
//! | DISCOVER                                 | OFFER                                      |
//! | DISCOVER with Rapid Commit (80)          | ACK with option 80 (RFC 4039)              |
//! | REQUEST for our address, or naming none  | ACK                                        |
//! | REQUEST for another address (50/ciaddr)  | NAK: a client that moved networks restarts |
//! | REQUEST naming another server (54)       | nothing: it took that server's offer       |
//! | INFORM                                   | ACK without yiaddr and lease time (4.3.5)  |
//! | DECLINE, RELEASE                         | nothing: the address stays the guest's     |
//! | BOOTP request (no option 53)             | BOOTP reply with yiaddr (RFC 951, 1497)    |
//!
//! The lease is infinite (option 51 = 0xffffffff): nothing on our side expires, and a client
//! that never renews never bothers us. Replies carry the options [`Config`] has values for;
//! they are put in the order of the client's parameter request list (55) where it names them,
//! the others after in ascending order, with the message type (53) first unless the client
//! placed it, because some small clients only look there. A NAK carries only 53 and 54
//! (RFC 2131 table 3).
//!
//! Sizes: an option longer than 255 bytes is split into several instances (RFC 3396). The
//! reply must fit the client's maximum message size (option 57, at least the 576-byte IP
//! datagram every client accepts, RFC 2131 section 2); optional options that don't fit are
//! left out, and the message is padded to the 300 bytes of a BOOTP message (RFC 951).
//!
//! Addressing (RFC 2131 section 4.1): to ciaddr when the client has one, else broadcast when
//! it set the broadcast flag (it can't receive unicast before it has an address), else unicast
//! to yiaddr at chaddr; NAKs are always broadcast. Relay agents have no place on the guest's
//! point-to-point link: giaddr is copied, but answers go straight to the client.
//!
//! Parsing and the messages' layout are [`wire::dhcp`](crate::wire::dhcp)'s; this module
//! decides what to answer.

use std::net::{IpAddr, Ipv4Addr};

use super::{Ctx, Outcome};
use crate::config::{Config, Ip4Config};
use crate::wire::build::{self, Route};
use crate::wire::dhcp::{
    addr_option, encoded_len, msg_type, opt, push_classless_route, push_end, push_reply_header,
    put_option, DhcpError, DhcpMessage, DhcpOption, BOOTREQUEST, CLIENT_PORT, FLAG_BROADCAST,
    FQDN_FLAG_E, FQDN_RCODE, HLEN_ETHERNET, HTYPE_ETHERNET, INFINITE_LEASE, MIN_MAX_DATAGRAM,
    MIN_MESSAGE_LEN, OPTIONS_OFFSET, SERVER_PORT,
};
use crate::wire::dns_name;
use crate::wire::parse::{Ethernet, Ipv4, Udp, IPV4_HEADER_LEN, UDP_HEADER_LEN};
use crate::wire::MacAddr;

/// What we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Offer,
    Ack {
        rapid_commit: bool,
    },
    /// An ACK to an INFORM: parameters only.
    InformAck,
    Nak,
    Bootp,
}

impl Reply {
    fn message_type(self) -> Option<u8> {
        match self {
            Reply::Offer => Some(msg_type::OFFER),
            Reply::Ack { .. } | Reply::InformAck => Some(msg_type::ACK),
            Reply::Nak => Some(msg_type::NAK),
            Reply::Bootp => None,
        }
    }
}

/// Answers a DHCP message from the guest (see the module documentation for how).
pub fn handle(ctx: &mut Ctx, _eth: &Ethernet, _ip: &Ipv4, udp: &Udp) -> Outcome {
    let Some(ip4) = ctx.config.ip4.as_ref() else {
        return Outcome::Ignored;
    };
    let req = match DhcpMessage::parse(udp.payload) {
        Ok(m) => m,
        Err(why) => return Outcome::Malformed(why.into()),
    };
    // A BOOTREPLY is some other server's business; other hardware types have no MAC to
    // answer to.
    if req.op != BOOTREQUEST || req.htype != HTYPE_ETHERNET || req.hlen != HLEN_ETHERNET {
        return Outcome::Ignored;
    }
    let reply = match decide(&req, ip4) {
        Ok(Some(reply)) => reply,
        Ok(None) => return Outcome::Ignored,
        Err(why) => return Outcome::Malformed(why.into()),
    };
    let message = build_reply(ctx.config, ip4, &req, reply);
    let route = reply_route(ctx.config, ip4, &req, reply);
    build::udp_frame(ctx.out, route, SERVER_PORT, CLIENT_PORT, &message);
    Outcome::Answered
}

/// Which answer a request gets, if any.
fn decide(req: &DhcpMessage, ip4: &Ip4Config) -> Result<Option<Reply>, DhcpError> {
    let Some(kind) = req.message_type()? else {
        return Ok(Some(Reply::Bootp));
    };
    Ok(match kind {
        msg_type::DISCOVER if req.option(opt::RAPID_COMMIT).is_some() => {
            Some(Reply::Ack { rapid_commit: true })
        }
        msg_type::DISCOVER => Some(Reply::Offer),
        msg_type::REQUEST => {
            // In SELECTING state the client names the server whose offer it took (RFC 2131
            // section 4.3.2); if that isn't us, the request isn't ours to answer.
            if let Some(server) = req.option(opt::SERVER_ID) {
                let server = addr_option(server, DhcpError::ServerIdLength)?;
                if server != ip4.our_addr {
                    return Ok(None);
                }
            }
            let requested = match req.option(opt::REQUESTED_ADDR) {
                Some(a) => Some(addr_option(a, DhcpError::RequestedAddrLength)?),
                None => Some(req.ciaddr).filter(|a| !a.is_unspecified()),
            };
            match requested {
                Some(a) if a != ip4.addr => Some(Reply::Nak),
                _ => Some(Reply::Ack {
                    rapid_commit: false,
                }),
            }
        }
        msg_type::INFORM => Some(Reply::InformAck),
        // DECLINE and RELEASE (RFC 2131 sections 4.3.3, 4.3.4) would free the address for
        // someone else: there is no one else. The rest are server-to-client types, or unknown.
        _ => None,
    })
}

/// Where the reply goes: link and network addresses (RFC 2131 section 4.1).
fn reply_route(config: &Config, ip4: &Ip4Config, req: &DhcpMessage, reply: Reply) -> Route {
    let client = req.client_mac();
    let (dst_mac, dst) = if reply == Reply::Nak {
        // "the server broadcasts any DHCPNAK messages to 0xffffffff" (giaddr is 0 here).
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    } else if !req.ciaddr.is_unspecified() {
        (client, req.ciaddr)
    } else if req.flags & FLAG_BROADCAST != 0 {
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    } else {
        (client, reply_yiaddr(ip4, reply))
    };
    // Nowhere to unicast to: an INFORM without ciaddr, or a chaddr that isn't a station.
    let (dst_mac, dst) = if dst.is_unspecified() || !dst_mac.is_unicast() {
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    } else {
        (dst_mac, dst)
    };
    Route {
        src_mac: config.our_mac,
        dst_mac,
        src: IpAddr::V4(ip4.our_addr),
        dst: IpAddr::V4(dst),
    }
}

fn reply_yiaddr(ip4: &Ip4Config, reply: Reply) -> Ipv4Addr {
    match reply {
        Reply::Offer | Reply::Ack { .. } | Reply::Bootp => ip4.addr,
        Reply::InformAck | Reply::Nak => Ipv4Addr::UNSPECIFIED,
    }
}

/// The whole BOOTP message of the reply.
fn build_reply(config: &Config, ip4: &Ip4Config, req: &DhcpMessage, reply: Reply) -> Vec<u8> {
    // RFC 2131 table 3: ciaddr is echoed in ACKs, zero in OFFERs and NAKs.
    let ciaddr = match reply {
        Reply::Ack { .. } | Reply::InformAck | Reply::Bootp => req.ciaddr,
        Reply::Offer | Reply::Nak => Ipv4Addr::UNSPECIFIED,
    };
    let mut m = Vec::with_capacity(MIN_MESSAGE_LEN.max(OPTIONS_OFFSET + 128));
    push_reply_header(&mut m, req, ciaddr, reply_yiaddr(ip4, reply));

    let options = reply_options(config, ip4, reply);
    let order = option_order(&options, req.option(opt::PARAMETER_LIST).unwrap_or(&[]));
    let mandatory: usize = options
        .iter()
        .filter(|o| is_mandatory(o.code))
        .map(|o| encoded_len(o.data.len()))
        .sum();
    let mut room = options_room(config, req).saturating_sub(mandatory);
    for o in order.into_iter().filter_map(|i| options.get(i)) {
        let len = encoded_len(o.data.len());
        if is_mandatory(o.code) {
            put_option(&mut m, o.code, &o.data);
        } else if len <= room {
            put_option(&mut m, o.code, &o.data);
            room -= len;
        }
    }
    push_end(&mut m);
    m
}

/// Options the protocol needs, sent even when the client's size limit would leave them out.
fn is_mandatory(code: u8) -> bool {
    matches!(
        code,
        opt::MESSAGE_TYPE | opt::SERVER_ID | opt::LEASE_TIME | opt::RAPID_COMMIT
    )
}

/// Bytes available for options (END excluded) in a reply the client accepts.
fn options_room(config: &Config, req: &DhcpMessage) -> usize {
    let client_max = match req.option(opt::MAX_MESSAGE_SIZE) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => 0,
    };
    let mut max = client_max.max(MIN_MAX_DATAGRAM);
    // Nor more than the link carries, though never less than every client must accept.
    if let Some(mtu) = config.mtu {
        max = max.min(usize::from(mtu).max(MIN_MAX_DATAGRAM));
    }
    max - IPV4_HEADER_LEN - UDP_HEADER_LEN - OPTIONS_OFFSET - 1
}

/// The options of a reply, in ascending code order.
fn reply_options(config: &Config, ip4: &Ip4Config, reply: Reply) -> Vec<DhcpOption> {
    let mut o = Vec::new();
    let mut add = |code: u8, data: Vec<u8>| o.push(DhcpOption { code, data });
    let dhcp = reply != Reply::Bootp;
    let lease = matches!(reply, Reply::Offer | Reply::Ack { .. });

    if reply == Reply::Nak {
        // Type and server identifier only (RFC 2131 table 3).
        add(opt::MESSAGE_TYPE, vec![msg_type::NAK]);
        add(opt::SERVER_ID, ip4.our_addr.octets().to_vec());
        return o;
    }

    add(
        opt::SUBNET_MASK,
        subnet_mask(ip4.prefix_len).octets().to_vec(),
    );
    if let Some(gw) = ip4.gateway {
        add(opt::ROUTER, gw.octets().to_vec());
    }
    if config.services.dhcp_dns {
        let dns: Vec<u8> = config.dns4().flat_map(|a| a.octets()).collect();
        if !dns.is_empty() {
            add(opt::DNS, dns);
        }
    }
    if let Some(name) = config.hostname.as_deref().filter(|n| !n.is_empty()) {
        add(opt::HOST_NAME, name.as_bytes().to_vec());
    }
    if let Some(mtu) = config.mtu {
        add(opt::INTERFACE_MTU, mtu.to_be_bytes().to_vec());
    }
    if lease {
        add(opt::LEASE_TIME, INFINITE_LEASE.to_be_bytes().to_vec());
    }
    if let Some(t) = reply.message_type() {
        add(opt::MESSAGE_TYPE, vec![t]);
    }
    if dhcp {
        add(opt::SERVER_ID, ip4.our_addr.octets().to_vec());
    }
    if reply == (Reply::Ack { rapid_commit: true }) {
        add(opt::RAPID_COMMIT, Vec::new());
    }
    if let Some(fqdn) = config.fqdn.as_deref() {
        let mut data = vec![FQDN_FLAG_E, FQDN_RCODE, FQDN_RCODE];
        if dns_name::encode(&mut data, fqdn, true) {
            add(opt::CLIENT_FQDN, data);
        }
    }
    if config.services.dhcp_search {
        let list = dns_name::encode_compressed_list(&config.search);
        if !list.is_empty() {
            add(opt::DOMAIN_SEARCH, list);
        }
    }
    if let Some(gw) = ip4.gateway {
        if !same_subnet(ip4.addr, gw, ip4.prefix_len) {
            add(opt::CLASSLESS_ROUTES, gateway_routes(gw));
        }
    }
    o
}

/// Indices into `options` in the order we send them: 53 first unless the client's parameter
/// request list `prl` places it, then as `prl` asks, then the rest as they are.
fn option_order(options: &[DhcpOption], prl: &[u8]) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::with_capacity(options.len());
    let push = |order: &mut Vec<usize>, code: u8| {
        if let Some(i) = options.iter().position(|o| o.code == code) {
            if !order.contains(&i) {
                order.push(i);
            }
        }
    };
    if !prl.contains(&opt::MESSAGE_TYPE) {
        push(&mut order, opt::MESSAGE_TYPE);
    }
    for &code in prl {
        push(&mut order, code);
    }
    for o in options {
        push(&mut order, o.code);
    }
    order
}

fn subnet_mask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len.min(32)))
            .unwrap_or(0),
    )
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    (u32::from(a) ^ u32::from(b)) & u32::from(subnet_mask(prefix_len)) == 0
}

/// Option 121 for a gateway outside the guest's subnet (RFC 3442): a host route to the
/// gateway on the link (next hop 0.0.0.0), then the default route through it. Clients that
/// understand 121 ignore option 3, so the default route has to be here too.
fn gateway_routes(gw: Ipv4Addr) -> Vec<u8> {
    let mut data = Vec::with_capacity(14);
    for (dst, len, via) in [
        (gw, 32, Ipv4Addr::UNSPECIFIED),
        (Ipv4Addr::UNSPECIFIED, 0, gw),
    ] {
        push_classless_route(&mut data, dst, len, via);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_routes_are_a_host_route_then_the_default() {
        let data = gateway_routes(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(data, [32, 10, 0, 0, 1, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    }

    #[test]
    fn masks_and_subnets() {
        assert_eq!(subnet_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(subnet_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(subnet_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(subnet_mask(40), Ipv4Addr::BROADCAST);
        let a = Ipv4Addr::new(192, 0, 2, 2);
        assert!(same_subnet(a, Ipv4Addr::new(192, 0, 2, 1), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(192, 0, 3, 1), 24));
        assert!(same_subnet(a, Ipv4Addr::new(10, 0, 0, 1), 0));
    }

    #[test]
    fn option_order_follows_the_request_list() {
        let o = |code| DhcpOption {
            code,
            data: Vec::new(),
        };
        let options = [o(1), o(3), o(6), o(51), o(53), o(54)];
        let codes =
            |order: Vec<usize>| -> Vec<u8> { order.into_iter().map(|i| options[i].code).collect() };
        assert_eq!(
            codes(option_order(&options, &[6, 3, 99, 3])),
            [53, 6, 3, 1, 51, 54]
        );
        assert_eq!(
            codes(option_order(&options, &[54, 53])),
            [54, 53, 1, 3, 6, 51]
        );
    }
}
