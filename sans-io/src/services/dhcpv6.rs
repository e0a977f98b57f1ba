//! DHCPv6 (RFC 8415): one address, DNS servers (RFC 3646), the domain search list and the
//! client's name (RFC 4704).
//!
//! Theory of operation. We are the only server on the guest's link and we have exactly one
//! address to give, `ip6.addr`, which never changes while we run. So we keep no bindings:
//! every answer is computed from the [`Config`] and the client's message alone.
//!
//! - SOLICIT gets an ADVERTISE, or a REPLY when the client asked for Rapid Commit (RFC 8415
//!   section 18.3.1). REQUEST, RENEW and REBIND get a REPLY with the address. Its lifetimes,
//!   and T1 and T2, are infinite: there is nothing to renew. Other addresses the client names
//!   come back with lifetimes 0, so it drops them (section 18.3.2, 18.3.4, 18.3.5).
//! - CONFIRM gets Success if every address it names is the guest's, NotOnLink otherwise
//!   (section 18.3.3). RELEASE and DECLINE get Success: there is no binding to drop.
//! - INFORMATION-REQUEST gets the DNS servers and search list only.
//! - Our server identifier is a DUID-LL of our MAC address (RFC 8415 section 11.4): stable
//!   without a clock, unlike the DUID-LLT the RFC prefers. Messages naming another server are
//!   not for us; messages breaking section 16's rules on identifiers are dropped.
//! - In local mode there is no address: IA_NAs get NoAddrsAvail.
//!
//! Answers go from our link-local address, port 547, to the client's address, port 546.
//! Every list we copy in is bounded so that answers fit IPv6's minimum MTU.
//!
//! Parsing and the messages' layout are [`wire::dhcpv6`](crate::wire::dhcpv6)'s; this module
//! decides what to answer.

use std::net::IpAddr;

use super::{Ctx, Outcome, MAX_DNS_SERVERS, MAX_DOMAIN_LIST_LEN};
use crate::config::{Config, Ip6Config};
use crate::wire::build::{udp_frame, Route};
use crate::wire::dhcpv6::{
    duid_ll, msg_type, option, push_ia_addr, push_option, push_status, status, Dhcpv6Error,
    Dhcpv6Message, Dhcpv6Option, IaAddr, IaNa, Options, ALL_DHCP_SERVERS, CLIENT_PORT, FQDN_N,
    FQDN_O, FQDN_S, INFINITE, MAX_DUID_LEN, SERVER_PORT,
};
use crate::wire::dns_name;
use crate::wire::parse::{Ethernet, Ipv6, Udp};
use crate::wire::MacAddr;

/// Bounds on what we copy into an answer, so that it fits IPv6's minimum MTU (1280 bytes):
/// IA_NAs answered (one gets the address, further ones NoAddrsAvail) and foreign addresses
/// revoked per IA_NA; DNS servers and search domains are bounded as for RAs
/// ([`MAX_DNS_SERVERS`], [`MAX_DOMAIN_LIST_LEN`]).
const MAX_IAS: usize = 4;
const MAX_REVOKED_ADDRS: usize = 4;

/// Answers a DHCPv6 message from the guest.
pub fn handle(ctx: &mut Ctx, eth: &Ethernet, ip: &Ipv6, udp: &Udp) -> Outcome {
    let Some(ip6) = ctx.config.ip6.as_ref() else {
        return Outcome::Ignored;
    };
    if udp.dst_port != SERVER_PORT || (ip.dst != ALL_DHCP_SERVERS && ip.dst != ip6.our_addr) {
        return Outcome::Ignored;
    }
    // Server and relay messages have no business coming from a client.
    use msg_type::{ADVERTISE, RECONFIGURE, RELAY_FORW, RELAY_REPL, REPLY};
    if let Some(ADVERTISE | REPLY | RECONFIGURE | RELAY_FORW | RELAY_REPL) =
        udp.payload.first().copied()
    {
        return Outcome::Ignored;
    }
    let msg = match Dhcpv6Message::parse(udp.payload) {
        Ok(msg) => msg,
        Err(why) => return Outcome::Malformed(why.into()),
    };
    if ip.src.is_unspecified() || ip.src.is_multicast() {
        return Outcome::Malformed(Dhcpv6Error::SourceNotUnicast.into());
    }
    let reply = match reply(ctx.config, ip6, &msg) {
        Ok(Some(reply)) => reply,
        Ok(None) => return Outcome::Ignored,
        Err(why) => return Outcome::Malformed(why.into()),
    };
    let route = Route {
        src_mac: ctx.config.our_mac,
        dst_mac: eth.src,
        src: IpAddr::V6(ip6.our_addr),
        dst: IpAddr::V6(ip.src),
    };
    udp_frame(ctx.out, route, SERVER_PORT, CLIENT_PORT, &reply);
    Outcome::Answered
}

/// Our server identifier: DUID-LL, Ethernet, our MAC.
pub fn server_duid(mac: MacAddr) -> [u8; 10] {
    duid_ll(mac)
}

/// What RFC 8415 section 16 says about the Server Identifier in a client message.
enum ServerIdRule {
    Required,
    Forbidden,
    Optional,
}

/// The answer to `msg`, `None` if it gets none.
fn reply(
    config: &Config,
    ip6: &Ip6Config,
    msg: &Dhcpv6Message,
) -> Result<Option<Vec<u8>>, Dhcpv6Error> {
    use msg_type::*;
    let opts = msg.options;
    let rule = match msg.msg_type {
        REQUEST | RENEW | RELEASE | DECLINE => ServerIdRule::Required,
        SOLICIT | CONFIRM | REBIND => ServerIdRule::Forbidden,
        INFORMATION_REQUEST => ServerIdRule::Optional,
        _ => return Ok(None),
    };
    let ours = server_duid(config.our_mac);
    match (rule, opts.find(option::SERVER_ID)) {
        (ServerIdRule::Required, None) => return Err(Dhcpv6Error::ServerIdMissing),
        (ServerIdRule::Forbidden, Some(_)) => return Err(Dhcpv6Error::UnexpectedServerId),
        (_, Some(id)) if id.data != ours => return Ok(None), // another server's
        _ => {}
    }
    let client_id = opts.find(option::CLIENT_ID);
    match client_id {
        Some(id) if !(2..=MAX_DUID_LEN).contains(&id.data.len()) => {
            return Err(Dhcpv6Error::ClientIdLength)
        }
        None if msg.msg_type != INFORMATION_REQUEST => return Err(Dhcpv6Error::ClientIdMissing),
        _ => {}
    }
    let has_ia = |code| opts.iter().any(|o| o.code == code);
    if msg.msg_type == INFORMATION_REQUEST
        && (has_ia(option::IA_NA) || has_ia(option::IA_TA) || has_ia(option::IA_PD))
    {
        return Err(Dhcpv6Error::InformationRequestWithIa);
    }

    let mut r = Vec::with_capacity(512);
    r.push(REPLY);
    r.extend_from_slice(&msg.transaction_id.to_be_bytes()[1..]);
    if let Some(id) = client_id {
        push_option(&mut r, option::CLIENT_ID, id.data);
    }
    push_option(&mut r, option::SERVER_ID, &ours);
    let fqdn = opts.find(option::CLIENT_FQDN);

    match msg.msg_type {
        SOLICIT if ip6.addr.is_unspecified() || !has_ia(option::IA_NA) => {
            // RFC 8415 18.3.1: nothing to assign is said in an ADVERTISE without IAs.
            r[0] = ADVERTISE;
            push_status(&mut r, status::NO_ADDRS_AVAIL, "no addresses available");
            push_config(&mut r, config, fqdn);
        }
        SOLICIT => {
            if opts.find(option::RAPID_COMMIT).is_some() {
                push_option(&mut r, option::RAPID_COMMIT, &[]);
            } else {
                r[0] = ADVERTISE;
            }
            push_ias(&mut r, ip6, opts, false)?;
            push_config(&mut r, config, fqdn);
        }
        REQUEST | RENEW | REBIND => {
            push_ias(&mut r, ip6, opts, true)?;
            push_config(&mut r, config, fqdn);
        }
        CONFIRM => {
            let mut any = false;
            let mut all_ours = true;
            for ia in opts.iter().filter(|o| o.code == option::IA_NA) {
                for a in IaNa::parse(ia.data)?.addresses() {
                    any = true;
                    all_ours &=
                        !ip6.addr.is_unspecified() && IaAddr::parse(a.data)?.addr == ip6.addr;
                }
            }
            // RFC 8415 18.3.3: no addresses to confirm, no reply.
            if !any {
                return Ok(None);
            }
            if all_ours {
                push_status(&mut r, status::SUCCESS, "on link");
            } else {
                push_status(&mut r, status::NOT_ON_LINK, "not on link");
            }
        }
        RELEASE | DECLINE => push_status(&mut r, status::SUCCESS, ""),
        _ => push_config(&mut r, config, None), // INFORMATION-REQUEST
    }
    Ok(Some(r))
}

/// One IA_NA in answer to each of the client's (up to [`MAX_IAS`]): the first gets our
/// address; with `revoke`, other addresses the client holds are returned with lifetimes 0.
fn push_ias(
    r: &mut Vec<u8>,
    ip6: &Ip6Config,
    opts: Options,
    revoke: bool,
) -> Result<(), Dhcpv6Error> {
    let mut assigned = false;
    for ia in opts
        .iter()
        .filter(|o| o.code == option::IA_NA)
        .take(MAX_IAS)
    {
        let ia = IaNa::parse(ia.data)?;
        let mut body = ia.iaid.to_be_bytes().to_vec();
        if ip6.addr.is_unspecified() || assigned {
            body.extend_from_slice(&[0; 8]); // T1, T2: no address, nothing to renew
            push_status(&mut body, status::NO_ADDRS_AVAIL, "no addresses available");
        } else {
            assigned = true;
            body.extend_from_slice(&INFINITE.to_be_bytes()); // T1
            body.extend_from_slice(&INFINITE.to_be_bytes()); // T2
            push_ia_addr(&mut body, ip6.addr, INFINITE);
            if revoke {
                for a in ia.addresses().take(MAX_REVOKED_ADDRS) {
                    let addr = IaAddr::parse(a.data)?.addr;
                    if addr != ip6.addr {
                        push_ia_addr(&mut body, addr, 0);
                    }
                }
            }
        }
        push_option(r, option::IA_NA, &body);
    }
    Ok(())
}

/// DNS servers, search list and, if the client sent one, its FQDN option.
fn push_config(r: &mut Vec<u8>, config: &Config, fqdn: Option<Dhcpv6Option>) {
    if config.services.dhcp_dns {
        let servers: Vec<u8> = config
            .dns6()
            .take(MAX_DNS_SERVERS)
            .flat_map(|a| a.octets())
            .collect();
        if !servers.is_empty() {
            push_option(r, option::DNS_SERVERS, &servers);
        }
    }
    if config.services.dhcp_search {
        let names = dns_name::encode_list(&config.search, |len| len <= MAX_DOMAIN_LIST_LEN);
        if !names.is_empty() {
            push_option(r, option::DOMAIN_LIST, &names);
        }
    }
    // RFC 4704 section 6: only to a client that sent the option. We update no DNS records:
    // N set, S clear, and O set if that overrides the client's wish for S.
    let Some(fqdn) = fqdn else { return };
    let (name, fully_qualified) = match (&config.fqdn, &config.hostname) {
        (Some(fqdn), _) => (fqdn, true),
        (None, Some(host)) => (host, false),
        (None, None) => return,
    };
    let client_s = fqdn.data.first().is_some_and(|f| f & FQDN_S != 0);
    let mut data = vec![FQDN_N | if client_s { FQDN_O } else { 0 }];
    if dns_name::encode(&mut data, name, fully_qualified) {
        push_option(r, option::CLIENT_FQDN, &data);
    }
}
