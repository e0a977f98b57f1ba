//! BOOTP and DHCP messages (RFC 951, RFC 2131, options RFC 2132 and later): parsing (options
//! concatenated as RFC 3396 says), writers for the reply's header and options, and a readable
//! dump (`Display`).
//!
//! What we answer is [`services::dhcp`](crate::services::dhcp)'s.

use std::fmt;
use std::net::Ipv4Addr;

use super::dns_name::{self, Name, Names, Pointers};
use super::MacAddr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// BOOTP `op` values (RFC 951).
pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
/// `htype` and `hlen` for Ethernet (the ARP hardware type, RFC 1700).
pub const HTYPE_ETHERNET: u8 = 1;
pub const HLEN_ETHERNET: u8 = 6;
/// The broadcast bit of `flags` (RFC 2131 section 2, figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;
/// The first four bytes of the options field (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header: op through file.
pub const FIXED_LEN: usize = 236;
/// Where the options start, after the magic cookie.
pub const OPTIONS_OFFSET: usize = FIXED_LEN + MAGIC_COOKIE.len();
/// RFC 951 fixed the vendor area at 64 bytes, so a BOOTP message is at least 300 bytes long;
/// some clients still drop shorter ones.
pub const MIN_MESSAGE_LEN: usize = 300;
/// Every client accepts IP datagrams of this size (RFC 2131 section 2); bigger ones only if it
/// says so with option 57.
pub const MIN_MAX_DATAGRAM: usize = 576;
/// Lease time meaning "for ever" (RFC 2131 section 3.3).
pub const INFINITE_LEASE: u32 = 0xffff_ffff;
/// Client FQDN flag E: the name is in DNS wire format (RFC 4702 section 2.1).
pub const FQDN_FLAG_E: u8 = 0x04;
/// Client FQDN RCODE1 and RCODE2 as servers send them (RFC 4702 section 2.2).
pub const FQDN_RCODE: u8 = 255;

/// Why a message isn't DHCP we can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    #[error("shorter than a BOOTP header and magic cookie")]
    Short,
    #[error("no magic cookie")]
    NoMagicCookie,
    #[error("message type option is not 1 byte")]
    MessageTypeLength,
    #[error("option cut after its code")]
    OptionCut,
    #[error("option runs past the end of the message")]
    OptionOverrun,
    #[error("server identifier is not 4 bytes")]
    ServerIdLength,
    #[error("requested address is not 4 bytes")]
    RequestedAddrLength,
}

/// Option codes (RFC 2132 unless noted).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const INTERFACE_MTU: u8 = 26;
    pub const BROADCAST_ADDR: u8 = 28;
    pub const NTP_SERVERS: u8 = 42;
    pub const REQUESTED_ADDR: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 4039.
    pub const RAPID_COMMIT: u8 = 80;
    /// RFC 4702.
    pub const CLIENT_FQDN: u8 = 81;
    /// RFC 3397.
    pub const DOMAIN_SEARCH: u8 = 119;
    /// RFC 3442.
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// Values of option 53 (RFC 2132 section 9.6).
pub mod msg_type {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;

    pub fn name(t: u8) -> Option<&'static str> {
        Some(match t {
            DISCOVER => "DHCPDISCOVER",
            OFFER => "DHCPOFFER",
            REQUEST => "DHCPREQUEST",
            DECLINE => "DHCPDECLINE",
            ACK => "DHCPACK",
            NAK => "DHCPNAK",
            RELEASE => "DHCPRELEASE",
            INFORM => "DHCPINFORM",
            _ => return None,
        })
    }
}

// --- Writing ---

/// The fixed part of a BOOTREPLY to `req` and the magic cookie: `xid`, `flags`, `giaddr` and
/// `chaddr` copied, no boot server or file; `ciaddr` and `yiaddr` as the server decides.
pub fn push_reply_header(m: &mut Vec<u8>, req: &DhcpMessage, ciaddr: Ipv4Addr, yiaddr: Ipv4Addr) {
    m.extend_from_slice(&[BOOTREPLY, HTYPE_ETHERNET, HLEN_ETHERNET, 0]);
    m.extend_from_slice(&req.xid.to_be_bytes());
    m.extend_from_slice(&[0, 0]); // secs
    m.extend_from_slice(&req.flags.to_be_bytes());
    m.extend_from_slice(&ciaddr.octets());
    m.extend_from_slice(&yiaddr.octets());
    m.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets()); // siaddr: no boot server
    m.extend_from_slice(&req.giaddr.octets());
    m.extend_from_slice(&req.chaddr);
    m.resize(FIXED_LEN, 0); // sname and file: nothing to boot
    m.extend_from_slice(&MAGIC_COOKIE);
}

/// Ends a message's options, and pads it to the length of a BOOTP message.
pub fn push_end(m: &mut Vec<u8>) {
    m.push(opt::END);
    if m.len() < MIN_MESSAGE_LEN {
        m.resize(MIN_MESSAGE_LEN, opt::PAD);
    }
}

/// Bytes an option of `data_len` bytes takes, split as RFC 3396 says.
pub fn encoded_len(data_len: usize) -> usize {
    data_len + 2 * data_len.div_ceil(255).max(1)
}

/// Appends an option, split into instances of at most 255 bytes (RFC 3396 section 5).
pub fn put_option(buf: &mut Vec<u8>, code: u8, data: &[u8]) {
    if data.is_empty() {
        buf.extend_from_slice(&[code, 0]);
    }
    for chunk in data.chunks(255) {
        buf.push(code);
        buf.push(chunk.len() as u8); // at most 255 by construction
        buf.extend_from_slice(chunk);
    }
}

/// Appends one route of option 121 (RFC 3442): the width, only the significant octets of the
/// destination, then the router.
pub fn push_classless_route(data: &mut Vec<u8>, dst: Ipv4Addr, width: u8, via: Ipv4Addr) {
    data.push(width);
    data.extend_from_slice(&dst.octets()[..usize::from(width.min(32)).div_ceil(8)]);
    data.extend_from_slice(&via.octets());
}

// --- Reading ---

/// One option of a [`DhcpMessage`], all its instances concatenated (RFC 3396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOption {
    pub code: u8,
    pub data: Vec<u8>,
}

/// A BOOTP/DHCP message, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpMessage {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub sname: [u8; 64],
    pub file: [u8; 128],
    /// In the order of their first appearance. Options overloaded into `sname` and `file`
    /// (option 52) are not read: no client we know of sends them.
    pub options: Vec<DhcpOption>,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl DhcpMessage {
    /// Parses a UDP payload. A message may end without an END option: clients that send
    /// exactly the bytes they mean exist, and nothing is lost by accepting them.
    pub fn parse(bytes: &[u8]) -> Result<DhcpMessage, DhcpError> {
        if bytes.len() < OPTIONS_OFFSET {
            return Err(DhcpError::Short);
        }
        if bytes[FIXED_LEN..OPTIONS_OFFSET] != MAGIC_COOKIE {
            return Err(DhcpError::NoMagicCookie);
        }
        let mut chaddr = [0; 16];
        chaddr.copy_from_slice(&bytes[28..44]);
        let mut sname = [0; 64];
        sname.copy_from_slice(&bytes[44..108]);
        let mut file = [0; 128];
        file.copy_from_slice(&bytes[108..FIXED_LEN]);
        Ok(DhcpMessage {
            op: bytes[0],
            htype: bytes[1],
            hlen: bytes[2],
            hops: bytes[3],
            xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            secs: u16::from_be_bytes([bytes[8], bytes[9]]),
            flags: u16::from_be_bytes([bytes[10], bytes[11]]),
            ciaddr: ip_at(bytes, 12),
            yiaddr: ip_at(bytes, 16),
            siaddr: ip_at(bytes, 20),
            giaddr: ip_at(bytes, 24),
            chaddr,
            sname,
            file,
            options: parse_options(&bytes[OPTIONS_OFFSET..])?,
        })
    }

    /// The data of option `code`, if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|o| o.code == code)
            .map(|o| &o.data[..])
    }

    /// Option 53; `None` for a plain BOOTP message.
    pub fn message_type(&self) -> Result<Option<u8>, DhcpError> {
        match self.option(opt::MESSAGE_TYPE) {
            None => Ok(None),
            Some(&[t]) => Ok(Some(t)),
            Some(_) => Err(DhcpError::MessageTypeLength),
        }
    }

    /// The client's MAC address: the first six bytes of chaddr.
    pub fn client_mac(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        MacAddr(m)
    }
}

/// Parses the options field (after the magic cookie), instances of a code concatenated.
pub fn parse_options(mut rest: &[u8]) -> Result<Vec<DhcpOption>, DhcpError> {
    let mut options: Vec<DhcpOption> = Vec::new();
    // Where each code sits in `options`, so repeated codes concatenate in linear time.
    let mut index = [usize::MAX; 256];
    loop {
        match rest {
            [] | [opt::END, ..] => return Ok(options),
            [opt::PAD, tail @ ..] => rest = tail,
            [_] => return Err(DhcpError::OptionCut),
            [code, len, tail @ ..] => {
                let len = usize::from(*len);
                let Some(data) = tail.get(..len) else {
                    return Err(DhcpError::OptionOverrun);
                };
                let slot = &mut index[usize::from(*code)];
                match options.get_mut(*slot) {
                    Some(o) => o.data.extend_from_slice(data),
                    None => {
                        *slot = options.len();
                        options.push(DhcpOption {
                            code: *code,
                            data: data.to_vec(),
                        });
                    }
                }
                rest = &tail[len..];
            }
        }
    }
}

/// A four-byte option as an address, or `why`.
pub fn addr_option(data: &[u8], why: DhcpError) -> Result<Ipv4Addr, DhcpError> {
    addr(data).ok_or(why)
}

/// A four-byte option as an address.
fn addr(data: &[u8]) -> Option<Ipv4Addr> {
    match data {
        &[a, b, c, d] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

// Decoding options for Display: `None` when the data doesn't have the option's shape.

fn decode_addrs(data: &[u8]) -> Option<String> {
    if data.is_empty() || data.len() % 4 != 0 {
        return None;
    }
    let addrs: Vec<String> = data
        .chunks_exact(4)
        .map(|a| ip_at(a, 0).to_string())
        .collect();
    Some(addrs.join(", "))
}

fn decode_u16(data: &[u8]) -> Option<String> {
    match data {
        &[hi, lo] => Some(u16::from_be_bytes([hi, lo]).to_string()),
        _ => None,
    }
}

/// The names of option 119 (or 81) as we show them: compressed (RFC 3397), each fully
/// qualified; anything else is malformed.
fn decode_names(data: &[u8]) -> Option<String> {
    let names = Names::new(data, Pointers::Allowed)
        .map(|n| n.ok().filter(Name::is_fully_qualified))
        .map(|n| n.map(|n| n.to_lossy_string()))
        .collect::<Option<Vec<_>>>()?;
    Some(names.join(", "))
}

fn decode_routes(mut data: &[u8]) -> Option<String> {
    let mut routes = Vec::new();
    while let [width, rest @ ..] = data {
        if *width > 32 {
            return None;
        }
        let octets = usize::from(*width).div_ceil(8);
        let dst = rest.get(..octets)?;
        let via = rest.get(octets..octets + 4)?;
        let mut d = [0; 4];
        d[..octets].copy_from_slice(dst);
        routes.push(format!(
            "{}/{width} via {}",
            Ipv4Addr::from(d),
            ip_at(via, 0)
        ));
        data = &rest[octets + 4..];
    }
    Some(routes.join(", "))
}

fn decode_fqdn(data: &[u8]) -> Option<String> {
    let [flags, rcode1, rcode2, name @ ..] = data else {
        return None;
    };
    let name = if flags & FQDN_FLAG_E != 0 {
        let (decoded, end) = dns_name::decode(name, 0, Pointers::Allowed)?;
        (end == name.len() && decoded.is_fully_qualified()).then_some(())?;
        decoded.to_lossy_string()
    } else {
        format!("{:?}", String::from_utf8_lossy(name))
    };
    Some(format!(
        "flags {flags:#04x}, rcode1 {rcode1}, rcode2 {rcode2}, name {name}"
    ))
}

fn hex(data: &[u8]) -> String {
    let bytes: Vec<String> = data.iter().map(|b| format!("{b:02x}")).collect();
    bytes.join(" ")
}

fn option_name(code: u8) -> &'static str {
    match code {
        opt::SUBNET_MASK => "subnet mask",
        opt::ROUTER => "router",
        opt::DNS => "domain name servers",
        opt::HOST_NAME => "host name",
        opt::DOMAIN_NAME => "domain name",
        opt::INTERFACE_MTU => "interface MTU",
        opt::BROADCAST_ADDR => "broadcast address",
        opt::NTP_SERVERS => "NTP servers",
        opt::REQUESTED_ADDR => "requested address",
        opt::LEASE_TIME => "lease time",
        opt::OVERLOAD => "option overload",
        opt::MESSAGE_TYPE => "message type",
        opt::SERVER_ID => "server identifier",
        opt::PARAMETER_LIST => "parameter request list",
        opt::MESSAGE => "message",
        opt::MAX_MESSAGE_SIZE => "maximum message size",
        opt::VENDOR_CLASS => "vendor class",
        opt::CLIENT_ID => "client identifier",
        opt::RAPID_COMMIT => "rapid commit",
        opt::CLIENT_FQDN => "client FQDN",
        opt::DOMAIN_SEARCH => "domain search",
        opt::CLASSLESS_ROUTES => "classless static routes",
        _ => "unknown",
    }
}

fn decode_option(code: u8, data: &[u8]) -> Option<String> {
    match code {
        opt::SUBNET_MASK => {
            let mask = addr(data)?;
            let bits = u32::from(mask);
            // Show the prefix length only for a contiguous mask.
            Some(if bits.leading_ones() + bits.trailing_zeros() == 32 {
                format!("{mask} (/{})", bits.leading_ones())
            } else {
                format!("{mask} (not contiguous)")
            })
        }
        opt::ROUTER | opt::DNS | opt::NTP_SERVERS => decode_addrs(data),
        opt::BROADCAST_ADDR | opt::REQUESTED_ADDR | opt::SERVER_ID => {
            addr(data).map(|a| a.to_string())
        }
        opt::HOST_NAME | opt::DOMAIN_NAME | opt::MESSAGE | opt::VENDOR_CLASS => {
            Some(format!("{:?}", String::from_utf8_lossy(data)))
        }
        opt::INTERFACE_MTU | opt::MAX_MESSAGE_SIZE => decode_u16(data),
        opt::LEASE_TIME => match data {
            &[a, b, c, d] => Some(match u32::from_be_bytes([a, b, c, d]) {
                INFINITE_LEASE => "infinite (0xffffffff)".to_owned(),
                secs => format!("{secs} s"),
            }),
            _ => None,
        },
        opt::MESSAGE_TYPE => match data {
            &[t] => Some(match msg_type::name(t) {
                Some(name) => name.to_owned(),
                None => format!("unknown ({t})"),
            }),
            _ => None,
        },
        opt::PARAMETER_LIST => {
            let codes: Vec<String> = data.iter().map(u8::to_string).collect();
            Some(codes.join(", "))
        }
        opt::RAPID_COMMIT => data.is_empty().then(|| "(present)".to_owned()),
        opt::CLIENT_FQDN => decode_fqdn(data),
        opt::DOMAIN_SEARCH => decode_names(data),
        opt::CLASSLESS_ROUTES => decode_routes(data),
        _ => Some(hex(data)),
    }
}

impl fmt::Display for DhcpMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            BOOTREQUEST => "BOOTREQUEST",
            BOOTREPLY => "BOOTREPLY",
            _ => "unknown",
        };
        writeln!(f, "op: {} ({op})", self.op)?;
        writeln!(
            f,
            "htype: {}, hlen: {}, hops: {}",
            self.htype, self.hlen, self.hops
        )?;
        writeln!(f, "xid: {:#010x}", self.xid)?;
        writeln!(f, "secs: {}", self.secs)?;
        let broadcast = if self.flags & FLAG_BROADCAST != 0 {
            " (broadcast)"
        } else {
            ""
        };
        writeln!(f, "flags: {:#06x}{broadcast}", self.flags)?;
        writeln!(f, "ciaddr: {}", self.ciaddr)?;
        writeln!(f, "yiaddr: {}", self.yiaddr)?;
        writeln!(f, "siaddr: {}", self.siaddr)?;
        writeln!(f, "giaddr: {}", self.giaddr)?;
        let hlen = usize::from(self.hlen).min(self.chaddr.len());
        let chaddr: Vec<String> = self.chaddr[..hlen]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(f, "chaddr: {}", chaddr.join(":"))?;
        for (field, bytes) in [("sname", &self.sname[..]), ("file", &self.file[..])] {
            if bytes.iter().any(|&b| b != 0) {
                let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
                writeln!(f, "{field}: {:?}", String::from_utf8_lossy(text))?;
            }
        }
        for o in &self.options {
            let name = option_name(o.code);
            match decode_option(o.code, &o.data) {
                Some(text) => writeln!(f, "option {} ({name}): {text}", o.code)?,
                None => writeln!(f, "option {} ({name}): malformed: {}", o.code, hex(&o.data))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_options_are_split() {
        let mut buf = Vec::new();
        let data = vec![7; 300];
        put_option(&mut buf, opt::DOMAIN_SEARCH, &data);
        assert_eq!(buf.len(), encoded_len(data.len()));
        assert_eq!((buf[0], buf[1]), (opt::DOMAIN_SEARCH, 255));
        assert_eq!((buf[257], buf[258]), (opt::DOMAIN_SEARCH, 45));
        buf.push(opt::END);
        let options = parse_options(&buf).unwrap();
        assert_eq!(
            options,
            vec![DhcpOption {
                code: opt::DOMAIN_SEARCH,
                data
            }]
        );
        let mut empty = Vec::new();
        put_option(&mut empty, opt::RAPID_COMMIT, &[]);
        assert_eq!(empty, [opt::RAPID_COMMIT, 0]);
        assert_eq!(encoded_len(0), 2);
    }

    #[test]
    fn classless_routes_encoding() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut data = Vec::new();
        push_classless_route(&mut data, gw, 32, Ipv4Addr::UNSPECIFIED);
        push_classless_route(&mut data, Ipv4Addr::new(192, 0, 2, 0), 24, gw);
        assert_eq!(
            data,
            [32, 10, 0, 0, 1, 0, 0, 0, 0, 24, 192, 0, 2, 10, 0, 0, 1]
        );
        assert_eq!(
            decode_routes(&data).as_deref(),
            Some("10.0.0.1/32 via 0.0.0.0, 192.0.2.0/24 via 10.0.0.1")
        );
        assert_eq!(decode_routes(&[33, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_routes(&[24, 10, 0]), None);
    }

    #[test]
    fn option_parsing_errors() {
        assert!(parse_options(&[opt::PAD, opt::PAD]).unwrap().is_empty());
        assert!(parse_options(&[1]).is_err());
        assert!(parse_options(&[1, 4, 255, 255]).is_err());
        // Nothing after END is read.
        assert!(parse_options(&[opt::END, 1]).unwrap().is_empty());
    }
}
