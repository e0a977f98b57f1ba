//! DHCPv6 messages (RFC 8415, options RFC 3646, RFC 4704): parsing with every option's
//! length checked, writers for the options we send, and a readable dump (`Display`).
//!
//! What we answer is [`services::dhcpv6`](crate::services::dhcpv6)'s.

use std::fmt;
use std::net::Ipv6Addr;

use super::dns_name::{Names, Pointers};
use super::{fmt_flags, fmt_hex, Lifetime, MacAddr, INFINITE_LIFETIME};

pub const SERVER_PORT: u16 = 547;
pub const CLIENT_PORT: u16 = 546;

/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 section 7.1), where clients send.
pub const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Why a client message isn't one we can answer: its layout, or the rules of RFC 8415
/// section 16 on what a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dhcpv6Error {
    #[error("shorter than its header")]
    Short,
    #[error("relay message")]
    Relay,
    #[error("truncated option header")]
    OptionHeaderTruncated,
    #[error("option beyond the message")]
    OptionOverrun,
    #[error("IA_NA shorter than its fixed part")]
    IaNaShort,
    #[error("IA address shorter than its fixed part")]
    IaAddrShort,
    #[error("source address is not unicast")]
    SourceNotUnicast,
    #[error("server identifier missing")]
    ServerIdMissing,
    #[error("unexpected server identifier")]
    UnexpectedServerId,
    #[error("client identifier of invalid length")]
    ClientIdLength,
    #[error("client identifier missing")]
    ClientIdMissing,
    #[error("INFORMATION-REQUEST with an IA")]
    InformationRequestWithIa,
}

/// Message types (RFC 8415 section 7.3).
pub mod msg_type {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const CONFIRM: u8 = 4;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
    pub const RECONFIGURE: u8 = 10;
    pub const INFORMATION_REQUEST: u8 = 11;
    pub const RELAY_FORW: u8 = 12;
    pub const RELAY_REPL: u8 = 13;
}

/// Option codes (RFC 8415 section 21, RFC 3646, RFC 4704).
pub mod option {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IA_ADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const AUTH: u16 = 11;
    pub const UNICAST: u16 = 12;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const VENDOR_OPTS: u16 = 17;
    pub const INTERFACE_ID: u16 = 18;
    pub const RECONF_MSG: u16 = 19;
    pub const RECONF_ACCEPT: u16 = 20;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    pub const IA_PREFIX: u16 = 26;
    pub const INFORMATION_REFRESH_TIME: u16 = 32;
    pub const CLIENT_FQDN: u16 = 39;
    pub const SOL_MAX_RT: u16 = 82;
    pub const INF_MAX_RT: u16 = 83;
}

/// Status codes (RFC 8415 section 21.13).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const UNSPEC_FAIL: u16 = 1;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
    pub const NOT_ON_LINK: u16 = 4;
    pub const USE_MULTICAST: u16 = 5;
    pub const NO_PREFIX_AVAIL: u16 = 6;
}

/// DUID types (RFC 8415 section 11) and the hardware type of Ethernet (RFC 826).
pub const DUID_LLT: u16 = 1;
pub const DUID_EN: u16 = 2;
pub const DUID_LL: u16 = 3;
pub const DUID_UUID: u16 = 4;
pub const HW_TYPE_ETHERNET: u16 = 1;
/// RFC 8415 section 11.1: a DUID is 2 to 130 octets, type included.
pub const MAX_DUID_LEN: usize = 130;

/// Lifetimes, T1 and T2: all ones is infinity (RFC 8415 section 7.7).
pub const INFINITE: u32 = INFINITE_LIFETIME;

/// Client FQDN flags (RFC 4704 section 4.1): S, the server updates AAAA; O, the server
/// overrode the client's S; N, the server updates nothing.
pub const FQDN_S: u8 = 0x01;
pub const FQDN_O: u8 = 0x02;
pub const FQDN_N: u8 = 0x04;

const HEADER_LEN: usize = 4;
const OPTION_HEADER_LEN: usize = 4;
pub const IA_NA_LEN: usize = 12;
pub const IA_ADDR_LEN: usize = 24;

// --- Writing ---

/// A DUID-LL for an Ethernet MAC address (RFC 8415 section 11.4).
pub fn duid_ll(mac: MacAddr) -> [u8; 10] {
    let mut d = [0u8; 10];
    d[..2].copy_from_slice(&DUID_LL.to_be_bytes());
    d[2..4].copy_from_slice(&HW_TYPE_ETHERNET.to_be_bytes());
    d[4..].copy_from_slice(&mac.0);
    d
}

/// Appends an option (RFC 8415 section 21.1).
pub fn push_option(r: &mut Vec<u8>, code: u16, data: &[u8]) {
    r.extend_from_slice(&code.to_be_bytes());
    // Callers bound what they put in: every option is far below 64 KiB.
    r.extend_from_slice(&(data.len() as u16).to_be_bytes());
    r.extend_from_slice(data);
}

/// Appends a Status Code option (RFC 8415 section 21.13).
pub fn push_status(r: &mut Vec<u8>, code: u16, message: &str) {
    let mut data = code.to_be_bytes().to_vec();
    data.extend_from_slice(message.as_bytes());
    push_option(r, option::STATUS_CODE, &data);
}

/// Appends an IA Address option (RFC 8415 section 21.6), both lifetimes `lifetime`.
pub fn push_ia_addr(r: &mut Vec<u8>, addr: Ipv6Addr, lifetime: u32) {
    let mut data = [0u8; IA_ADDR_LEN];
    data[..16].copy_from_slice(&addr.octets());
    data[16..20].copy_from_slice(&lifetime.to_be_bytes()); // preferred
    data[20..].copy_from_slice(&lifetime.to_be_bytes()); // valid
    push_option(r, option::IA_ADDR, &data);
}

// --- Reading ---

/// A client or server message (RFC 8415 section 8): type, transaction id and options.
#[derive(Debug, Clone, Copy)]
pub struct Dhcpv6Message<'a> {
    pub msg_type: u8,
    pub transaction_id: u32,
    pub options: Options<'a>,
}

impl<'a> Dhcpv6Message<'a> {
    /// Parses a message, checking every option's length. Relay messages have another layout
    /// (section 9) and are refused.
    pub fn parse(b: &'a [u8]) -> Result<Dhcpv6Message<'a>, Dhcpv6Error> {
        if b.len() < HEADER_LEN {
            return Err(Dhcpv6Error::Short);
        }
        if matches!(b[0], msg_type::RELAY_FORW | msg_type::RELAY_REPL) {
            return Err(Dhcpv6Error::Relay);
        }
        Ok(Dhcpv6Message {
            msg_type: b[0],
            transaction_id: u32::from_be_bytes([0, b[1], b[2], b[3]]),
            options: Options::parse(&b[HEADER_LEN..])?,
        })
    }
}

/// Options whose lengths were checked: each header and its data inside the message.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a>(&'a [u8]);

/// One option: its code and data.
#[derive(Debug, Clone, Copy)]
pub struct Dhcpv6Option<'a> {
    pub code: u16,
    pub data: &'a [u8],
}

impl<'a> Options<'a> {
    pub fn parse(mut b: &'a [u8]) -> Result<Options<'a>, Dhcpv6Error> {
        let all = b;
        while !b.is_empty() {
            if b.len() < OPTION_HEADER_LEN {
                return Err(Dhcpv6Error::OptionHeaderTruncated);
            }
            let len = OPTION_HEADER_LEN + usize::from(u16::from_be_bytes([b[2], b[3]]));
            if len > b.len() {
                return Err(Dhcpv6Error::OptionOverrun);
            }
            b = &b[len..];
        }
        Ok(Options(all))
    }

    pub fn iter(&self) -> impl Iterator<Item = Dhcpv6Option<'a>> {
        let mut b = self.0;
        std::iter::from_fn(move || {
            let header = b.get(..OPTION_HEADER_LEN)?;
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let data = b.get(OPTION_HEADER_LEN..OPTION_HEADER_LEN + len)?;
            let code = u16::from_be_bytes([header[0], header[1]]);
            b = &b[OPTION_HEADER_LEN + len..];
            Some(Dhcpv6Option { code, data })
        })
    }

    pub fn find(&self, code: u16) -> Option<Dhcpv6Option<'a>> {
        self.iter().find(|o| o.code == code)
    }
}

/// An IA_NA option's contents (RFC 8415 section 21.4).
pub struct IaNa<'a> {
    pub iaid: u32,
    pub options: Options<'a>,
}

impl<'a> IaNa<'a> {
    pub fn parse(b: &'a [u8]) -> Result<IaNa<'a>, Dhcpv6Error> {
        if b.len() < IA_NA_LEN {
            return Err(Dhcpv6Error::IaNaShort);
        }
        Ok(IaNa {
            iaid: u32_at(b, 0),
            options: Options::parse(&b[IA_NA_LEN..])?,
        })
    }

    /// Its IA Address options.
    pub fn addresses(&self) -> impl Iterator<Item = Dhcpv6Option<'a>> {
        self.options.iter().filter(|o| o.code == option::IA_ADDR)
    }
}

/// An IA Address option's contents (RFC 8415 section 21.6).
pub struct IaAddr<'a> {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub options: Options<'a>,
}

impl<'a> IaAddr<'a> {
    pub fn parse(b: &'a [u8]) -> Result<IaAddr<'a>, Dhcpv6Error> {
        if b.len() < IA_ADDR_LEN {
            return Err(Dhcpv6Error::IaAddrShort);
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        Ok(IaAddr {
            addr: Ipv6Addr::from(a),
            preferred: u32_at(b, 16),
            valid: u32_at(b, 20),
            options: Options::parse(&b[IA_ADDR_LEN..])?,
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn msg_type_name(t: u8) -> &'static str {
    use msg_type::*;
    match t {
        SOLICIT => "SOLICIT",
        ADVERTISE => "ADVERTISE",
        REQUEST => "REQUEST",
        CONFIRM => "CONFIRM",
        RENEW => "RENEW",
        REBIND => "REBIND",
        REPLY => "REPLY",
        RELEASE => "RELEASE",
        DECLINE => "DECLINE",
        RECONFIGURE => "RECONFIGURE",
        INFORMATION_REQUEST => "INFORMATION-REQUEST",
        RELAY_FORW => "RELAY-FORW",
        RELAY_REPL => "RELAY-REPL",
        _ => "unknown",
    }
}

pub fn option_name(code: u16) -> &'static str {
    use option::*;
    match code {
        CLIENT_ID => "client identifier",
        SERVER_ID => "server identifier",
        IA_NA => "IA_NA",
        IA_TA => "IA_TA",
        IA_ADDR => "IA address",
        ORO => "option request",
        PREFERENCE => "preference",
        ELAPSED_TIME => "elapsed time",
        RELAY_MSG => "relay message",
        AUTH => "authentication",
        UNICAST => "server unicast",
        STATUS_CODE => "status code",
        RAPID_COMMIT => "rapid commit",
        USER_CLASS => "user class",
        VENDOR_CLASS => "vendor class",
        VENDOR_OPTS => "vendor-specific information",
        INTERFACE_ID => "interface-id",
        RECONF_MSG => "reconfigure message",
        RECONF_ACCEPT => "reconfigure accept",
        DNS_SERVERS => "DNS recursive name servers",
        DOMAIN_LIST => "domain search list",
        IA_PD => "IA_PD",
        IA_PREFIX => "IA prefix",
        INFORMATION_REFRESH_TIME => "information refresh time",
        CLIENT_FQDN => "client FQDN",
        SOL_MAX_RT => "SOL_MAX_RT",
        INF_MAX_RT => "INF_MAX_RT",
        _ => "unknown",
    }
}

pub fn status_name(code: u16) -> &'static str {
    use status::*;
    match code {
        SUCCESS => "Success",
        UNSPEC_FAIL => "UnspecFail",
        NO_ADDRS_AVAIL => "NoAddrsAvail",
        NO_BINDING => "NoBinding",
        NOT_ON_LINK => "NotOnLink",
        USE_MULTICAST => "UseMulticast",
        NO_PREFIX_AVAIL => "NoPrefixAvail",
        _ => "unknown",
    }
}

impl fmt::Display for Dhcpv6Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}), transaction id {:#08x}",
            msg_type_name(self.msg_type),
            self.msg_type,
            self.transaction_id
        )?;
        fmt_options(f, self.options, 1)
    }
}

fn fmt_options(f: &mut fmt::Formatter<'_>, opts: Options, depth: usize) -> fmt::Result {
    for opt in opts.iter() {
        write!(f, "\n{:width$}", "", width = depth * 2)?;
        fmt_option(f, opt, depth)?;
    }
    Ok(())
}

/// Nested options, or their bytes in hex when they don't parse.
fn fmt_nested(f: &mut fmt::Formatter<'_>, b: &[u8], depth: usize) -> fmt::Result {
    match Options::parse(b) {
        Ok(opts) => fmt_options(f, opts, depth),
        Err(_) => {
            write!(f, "\n{:width$}(malformed options: ", "", width = depth * 2)?;
            fmt_hex(f, b)?;
            f.write_str(")")
        }
    }
}

fn fmt_duid(f: &mut fmt::Formatter<'_>, d: &[u8]) -> fmt::Result {
    f.write_str("DUID ")?;
    fmt_hex(f, d)?;
    let mac = |b: &[u8]| -> Option<MacAddr> { Some(MacAddr(b.try_into().ok()?)) };
    let kind = d.get(..2).map(|t| u16::from_be_bytes([t[0], t[1]]));
    let hw = |at: usize| d.get(at..at + 2).map(|t| u16::from_be_bytes([t[0], t[1]]));
    let ll = |f: &mut fmt::Formatter<'_>, b: &[u8]| match mac(b) {
        Some(m) => write!(f, ", {m}"),
        None => {
            f.write_str(", address ")?;
            fmt_hex(f, b)
        }
    };
    match (kind, hw(2)) {
        (Some(DUID_LLT), Some(hw)) if d.len() >= 8 => {
            write!(f, " (LLT, hardware type {hw}, time {}", u32_at(d, 4))?;
            ll(f, &d[8..])?;
            f.write_str(")")
        }
        (Some(DUID_LL), Some(hw)) => {
            write!(f, " (LL, hardware type {hw}")?;
            ll(f, &d[4..])?;
            f.write_str(")")
        }
        (Some(DUID_EN), _) if d.len() >= 6 => {
            write!(f, " (EN, enterprise {}, id ", u32_at(d, 2))?;
            fmt_hex(f, &d[6..])?;
            f.write_str(")")
        }
        (Some(DUID_UUID), _) if d.len() == 18 => f.write_str(" (UUID)"),
        _ => f.write_str(" (unknown type)"),
    }
}

fn fmt_option(f: &mut fmt::Formatter<'_>, opt: Dhcpv6Option, depth: usize) -> fmt::Result {
    use option::*;
    let d = opt.data;
    write!(f, "{} ({}): ", option_name(opt.code), opt.code)?;
    match opt.code {
        CLIENT_ID | SERVER_ID => fmt_duid(f, d),
        IA_NA | IA_PD if d.len() >= IA_NA_LEN => {
            let (iaid, t1, t2) = (u32_at(d, 0), Lifetime(u32_at(d, 4)), Lifetime(u32_at(d, 8)));
            write!(f, "IAID {iaid:#010x}, T1 {t1}, T2 {t2}")?;
            fmt_nested(f, &d[IA_NA_LEN..], depth + 1)
        }
        IA_TA if d.len() >= 4 => {
            write!(f, "IAID {:#010x}", u32_at(d, 0))?;
            fmt_nested(f, &d[4..], depth + 1)
        }
        IA_ADDR => match IaAddr::parse(d) {
            Ok(a) => {
                write!(
                    f,
                    "{}, preferred lifetime {}, valid lifetime {}",
                    a.addr,
                    Lifetime(a.preferred),
                    Lifetime(a.valid)
                )?;
                fmt_options(f, a.options, depth + 1)
            }
            Err(_) => fmt_malformed(f, d),
        },
        IA_PREFIX if d.len() >= 25 => {
            let mut p = [0u8; 16];
            p.copy_from_slice(&d[9..25]);
            write!(
                f,
                "{}/{}, preferred lifetime {}, valid lifetime {}",
                Ipv6Addr::from(p),
                d[8],
                Lifetime(u32_at(d, 0)),
                Lifetime(u32_at(d, 4))
            )?;
            fmt_nested(f, &d[25..], depth + 1)
        }
        ORO if d.len() % 2 == 0 => {
            for (i, c) in d.chunks_exact(2).enumerate() {
                let code = u16::from_be_bytes([c[0], c[1]]);
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{} ({code})", option_name(code))?;
            }
            Ok(())
        }
        PREFERENCE if d.len() == 1 => write!(f, "{}", d[0]),
        ELAPSED_TIME if d.len() == 2 => {
            // In hundredths of a second (RFC 8415 section 21.9).
            write!(f, "{} ms", u32::from(u16::from_be_bytes([d[0], d[1]])) * 10)
        }
        STATUS_CODE if d.len() >= 2 => {
            let code = u16::from_be_bytes([d[0], d[1]]);
            let message = String::from_utf8_lossy(&d[2..]);
            write!(f, "{} ({code}) {message:?}", status_name(code))
        }
        RAPID_COMMIT | RECONF_ACCEPT if d.is_empty() => f.write_str("(empty)"),
        UNICAST if d.len() == 16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(d);
            write!(f, "{}", Ipv6Addr::from(a))
        }
        DNS_SERVERS if d.len() % 16 == 0 => {
            for (i, c) in d.chunks_exact(16).enumerate() {
                let mut a = [0u8; 16];
                a.copy_from_slice(c);
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{}", Ipv6Addr::from(a))?;
            }
            Ok(())
        }
        DOMAIN_LIST => write!(f, "{}", Names::new(d, Pointers::Refused)),
        CLIENT_FQDN if !d.is_empty() => {
            f.write_str("flags ")?;
            let names = [(FQDN_N, "N"), (FQDN_O, "O"), (FQDN_S, "S")];
            fmt_flags(
                f,
                d[0].into(),
                &names.map(|(bit, name)| (u32::from(bit), name)),
            )?;
            write!(f, ", name {}", Names::new(&d[1..], Pointers::Refused))
        }
        INFORMATION_REFRESH_TIME | SOL_MAX_RT | INF_MAX_RT if d.len() == 4 => {
            write!(f, "{}", Lifetime(u32_at(d, 0)))
        }
        _ => fmt_malformed(f, d),
    }
}

/// Raw bytes of an option we don't decode (or that doesn't decode).
fn fmt_malformed(f: &mut fmt::Formatter<'_>, d: &[u8]) -> fmt::Result {
    write!(f, "{} octets ", d.len())?;
    fmt_hex(f, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_check_lengths() {
        assert!(Options::parse(&[0, 1, 0]).is_err());
        assert!(Options::parse(&[0, 1, 0, 2, 0]).is_err());
        let o = Options::parse(&[0, 14, 0, 0, 0, 1, 0, 1, 7]).unwrap();
        assert_eq!(o.iter().count(), 2);
        assert_eq!(o.find(option::CLIENT_ID).unwrap().data, &[7]);
    }
}
