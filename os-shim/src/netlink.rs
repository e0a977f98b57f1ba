//! Host network discovery over rtnetlink (NETLINK_ROUTE): links, addresses, routes.
//!
//! Messages are framed, decoded and emitted with the rust-netlink crates
//! (`netlink-packet-core` 0.9, `netlink-packet-route` 0.34, `netlink-sys` 0.9 for the plain
//! blocking socket): they are maintained, and they also emit the messages we will need to *set*
//! links, addresses and routes in a namespace. We decode, one by one, only the attributes we
//! use, so that an attribute the crate cannot parse (newer kernel, exotic link) hides nothing.
//!
//! [`Netlink`] does the I/O; [`parse_links`], [`parse_addrs`], [`parse_routes`] and
//! [`parse_dump`] are pure functions over the raw bytes the kernel answered, so that tests can
//! feed them canned dumps (see `testdata/netlink/`).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeader, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteLwEnCapType, RouteMessage,
    RouteMetric, RouteNextHop, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use sans_io::config::host::{HostAddr, HostLink, HostNet, HostRoute, NextHop};
use sans_io::config::{GuestRoute, IpFamily};
use sans_io::wire::MacAddr;

/// Kernel ABI numbers from `linux/rtnetlink.h`, `linux/if_link.h` and `linux/if_addr.h`.
mod uapi {
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_NEWROUTE: u16 = 24;

    /// `sizeof(struct ifinfomsg)`, `sizeof(struct ifaddrmsg)`, `sizeof(struct rtmsg)`.
    pub const IFINFOMSG_LEN: usize = 16;
    pub const IFADDRMSG_LEN: usize = 8;
    pub const RTMSG_LEN: usize = 12;

    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_MTU: u16 = 4;

    pub const IFA_ADDRESS: u16 = 1;
    pub const IFA_LOCAL: u16 = 2;
    pub const IFA_FLAGS: u16 = 8;

    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_PRIORITY: u16 = 6;
    pub const RTA_PREFSRC: u16 = 7;
    pub const RTA_METRICS: u16 = 8;
    pub const RTA_MULTIPATH: u16 = 9;
    pub const RTA_TABLE: u16 = 15;
    pub const RTA_VIA: u16 = 18;

    pub const RT_TABLE_MAIN: u32 = 254;
}

/// How long one `recv()` may wait for the kernel before the dump is abandoned.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer: the kernel's dump datagrams are at most 32 KiB; bigger ones are reported.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Bounds on one dump, against a kernel (or impostor) that never says NLMSG_DONE.
const MAX_DATAGRAMS: usize = 1 << 16;
const MAX_DUMP_BYTES: usize = 256 << 20;
/// Consecutive EINTRs tolerated by one `recv()`/`send()`.
const MAX_EINTR: u32 = 1000;
/// Attempts at a dump the kernel flags NLM_F_DUMP_INTR (tables changed under it).
const DUMP_ATTEMPTS: u32 = 3;

/// Which dump an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    /// RTM_GETLINK.
    Links,
    /// RTM_GETADDR, all families.
    Addrs,
    /// RTM_GETROUTE, AF_INET then AF_INET6.
    Routes,
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dump::Links => "link",
            Dump::Addrs => "address",
            Dump::Routes => "route",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {op} failed: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{dump} dump: {op} failed: {source}")]
    Io {
        dump: Dump,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{dump} dump: no answer from the kernel within {after:?}")]
    Timeout { dump: Dump, after: Duration },
    #[error("{dump} dump: kernel answered error {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Kernel { dump: Dump, errno: i32 },
    #[error("{dump} dump: malformed message at byte {offset}: {what}")]
    Malformed {
        dump: Dump,
        offset: usize,
        what: String,
    },
    #[error("{dump} dump: {what}")]
    TooLarge { dump: Dump, what: &'static str },
    #[error("{dump} dump: interrupted by concurrent changes {attempts} times in a row")]
    Interrupted { dump: Dump, attempts: u32 },
    /// A request ([`Netlink::set_link_up`], [`Netlink::add_route`], ...) could not be sent or
    /// its answer not received. `what` says what was being done.
    #[error("{what}: netlink {op} failed: {source}")]
    RequestIo {
        what: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}: no answer from the kernel within {after:?}")]
    RequestTimeout { what: String, after: Duration },
    /// The kernel refused a request: `errno`, and its extended-ack message when it gave one.
    #[error("{what}: {}{}", errno_text(*errno), ext_text(message))]
    Refused {
        what: String,
        errno: i32,
        message: Option<String>,
    },
    #[error("{what}: malformed answer: {detail}")]
    BadAnswer { what: String, detail: String },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused a request or a dump.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } | NetlinkError::Refused { errno, .. } => {
                Some(*errno)
            }
            _ => None,
        }
    }

    /// The reason alone, without what was being done: "Network is unreachable (Nexthop has
    /// invalid gateway)" for a refusal, the whole message otherwise.
    pub fn reason(&self) -> String {
        match self {
            NetlinkError::Refused { errno, message, .. } => {
                format!("{}{}", errno_text(*errno), ext_text(message))
            }
            other => other.to_string(),
        }
    }
}

/// `strerror()`-style text for an errno, without Rust's "(os error N)" suffix.
pub(crate) fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn ext_text(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(" ({m})"),
        None => String::new(),
    }
}

/// A blocking NETLINK_ROUTE socket bound to the current network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetlinkError> {
        let sock_err = |op| move |source| NetlinkError::Socket { op, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket"))?;
        socket.bind_auto().map_err(sock_err("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(sock_err("connect"))?;
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| NetlinkError::Socket {
                op: "setsockopt(SO_RCVTIMEO)",
                source: e.into(),
            })?;
        // Best effort: the kernel's reason for a refusal ("Nexthop has invalid gateway"), and
        // acknowledgements without a copy of the request.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Links, addresses and main-table routes of the socket's network namespace.
    pub fn dump_host_net(&mut self) -> Result<HostNet, NetlinkError> {
        let links = self.dump_raw(Dump::Links)?;
        let addrs = self.dump_raw(Dump::Addrs)?;
        let routes = self.dump_raw(Dump::Routes)?;
        parse_dump(&links, &addrs, &routes)
    }

    /// The kernel's answer to a dump, as raw messages (each request's answer ending with its
    /// NLMSG_DONE; [`Dump::Routes`] is two requests, AF_INET then AF_INET6), ready for the
    /// `parse_*` functions. Retried when the kernel flags the dump as interrupted.
    pub fn dump_raw(&mut self, dump: Dump) -> Result<Vec<u8>, NetlinkError> {
        let requests: Vec<RouteNetlinkMessage> = match dump {
            Dump::Links => vec![RouteNetlinkMessage::GetLink(LinkMessage::default())],
            Dump::Addrs => vec![RouteNetlinkMessage::GetAddress(AddressMessage::default())],
            Dump::Routes => [AddressFamily::Inet, AddressFamily::Inet6]
                .into_iter()
                .map(|family| {
                    let mut msg = RouteMessage::default();
                    msg.header.address_family = family;
                    RouteNetlinkMessage::GetRoute(msg)
                })
                .collect(),
        };
        let mut out = Vec::new();
        for request in requests {
            let mut attempt = 1;
            loop {
                let (bytes, interrupted) = self.request_dump(dump, request.clone())?;
                if !interrupted {
                    out.extend_from_slice(&bytes);
                    break;
                }
                if attempt == DUMP_ATTEMPTS {
                    return Err(NetlinkError::Interrupted {
                        dump,
                        attempts: attempt,
                    });
                }
                attempt += 1;
            }
        }
        Ok(out)
    }

    /// Sends one dump request, collects the messages answering it up to NLMSG_DONE.
    /// Returns them and whether any carried NLM_F_DUMP_INTR.
    fn request_dump(
        &mut self,
        dump: Dump,
        request: RouteNetlinkMessage,
    ) -> Result<(Vec<u8>, bool), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
        msg.finalize();
        let mut req = vec![0; msg.buffer_len()];
        msg.serialize(&mut req);
        self.send(dump, &req)?;

        let mut out = Vec::new();
        let mut interrupted = false;
        for _ in 0..MAX_DATAGRAMS {
            let len = self.recv(dump)?;
            let datagram = &self.buf[..len];
            let mut offset = 0;
            while offset < datagram.len() {
                let frame = frame_at(dump, datagram, offset)?;
                let end = (offset + align4(frame.len)).min(datagram.len());
                // Stale answers to an earlier, abandoned request: not ours.
                if frame.seq == seq {
                    out.extend_from_slice(&datagram[offset..end]);
                    interrupted |= frame.flags & NLM_F_DUMP_INTR != 0;
                    if frame.kind == NLMSG_DONE {
                        return Ok((out, interrupted));
                    }
                    if frame.kind == NLMSG_ERROR {
                        // Ours to report, with the offset where it stands in `out`.
                        check_error(dump, frame.payload, 0)?;
                    }
                }
                offset = end;
            }
            if out.len() > MAX_DUMP_BYTES {
                return Err(NetlinkError::TooLarge {
                    dump,
                    what: "answer exceeds 256 MiB",
                });
            }
        }
        Err(NetlinkError::TooLarge {
            dump,
            what: "no NLMSG_DONE after 65536 datagrams",
        })
    }

    fn send(&mut self, dump: Dump, req: &[u8]) -> Result<(), NetlinkError> {
        self.send_bytes(req).map_err(|source| NetlinkError::Io {
            dump,
            op: "send",
            source,
        })
    }

    fn recv(&mut self, dump: Dump) -> Result<usize, NetlinkError> {
        self.recv_bytes().map_err(|e| match e {
            RecvFail::Timeout => NetlinkError::Timeout {
                dump,
                after: RECV_TIMEOUT,
            },
            RecvFail::TooLarge => NetlinkError::TooLarge {
                dump,
                what: "datagram larger than the receive buffer",
            },
            RecvFail::Io(source) => NetlinkError::Io {
                dump,
                op: "recv",
                source,
            },
        })
    }

    /// Sends one datagram, retrying on EINTR.
    fn send_bytes(&mut self, req: &[u8]) -> Result<(), io::Error> {
        for _ in 0..MAX_EINTR {
            match self.socket.send(req, 0) {
                Ok(n) if n == req.len() => return Ok(()),
                Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short send")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::Interrupted.into())
    }

    /// Receives one datagram into `self.buf`, retrying on EINTR.
    fn recv_bytes(&mut self) -> Result<usize, RecvFail> {
        for _ in 0..MAX_EINTR {
            match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => return Err(RecvFail::TooLarge),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(RecvFail::Timeout),
                Err(e) => return Err(RecvFail::Io(e)),
            }
        }
        Err(RecvFail::Io(io::ErrorKind::Interrupted.into()))
    }
}

enum RecvFail {
    Timeout,
    TooLarge,
    Io(io::Error),
}

/// `NLMSGERR_ATTR_MSG` (`linux/netlink.h`): the kernel's extended-ack text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `RTPROT_BOOT`: what `ip route add` marks its routes with.
const RTPROT_BOOT: u8 = 3;

/// # Changing links, addresses and routes
///
/// Each call sends one request with `NLM_F_ACK` and waits (at most 5 s) for the kernel's
/// acknowledgement; a refusal is [`NetlinkError::Refused`] with the errno, the kernel's
/// extended-ack text when it gave one, and what was being done ("adding route 203.0.113.0/24
/// via 198.51.100.1 on link 2"). The socket acts on the network namespace it was *created*
/// in: to configure another namespace, call [`Netlink::open`] inside it (see
/// [`crate::ns::in_netns`]); the socket can then be used from any thread.
impl Netlink {
    /// The index of the link called `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let link = self.get_link(format!("looking up link {name}"), msg)?;
        Ok(link.index)
    }

    /// The link with index `ifindex`: name, MAC, MTU, up.
    pub fn link(&mut self, ifindex: u32) -> Result<HostLink, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        self.get_link(format!("looking up link {ifindex}"), msg)
    }

    /// The hardware address of link `ifindex` (`None` for links without an Ethernet one).
    pub fn link_mac(&mut self, ifindex: u32) -> Result<Option<MacAddr>, NetlinkError> {
        Ok(self.link(ifindex)?.mac)
    }

    /// Sets or clears `IFF_UP` on link `ifindex`, leaving its other flags alone.
    pub fn set_link_up(&mut self, ifindex: u32, up: bool) -> Result<(), NetlinkError> {
        let msg = link_up_message(ifindex, up);
        let what = format!("bringing link {ifindex} {}", if up { "up" } else { "down" });
        self.ack(what, RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_link_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        let what = format!("setting MTU {mtu} on link {ifindex}");
        self.ack(what, RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_link_mac(&mut self, ifindex: u32, mac: MacAddr) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        let what = format!("setting MAC address {mac} on link {ifindex}");
        self.ack(what, RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Adds `addr/prefix_len` to link `ifindex` (`NLM_F_CREATE | NLM_F_EXCL`: an address
    /// already there is refused with EEXIST). `nodad` sets `IFA_F_NODAD`: an IPv6 address is
    /// then usable at once instead of tentative for a second or two.
    pub fn add_address(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        nodad: bool,
    ) -> Result<(), NetlinkError> {
        let what = format!("adding address {addr}/{prefix_len} on link {ifindex}");
        let msg = address_message(ifindex, addr, prefix_len, nodad).map_err(|detail| {
            NetlinkError::Refused {
                what: what.clone(),
                errno: libc::EINVAL,
                message: Some(detail),
            }
        })?;
        self.ack(
            what,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds `route` through link `ifindex` to the main table (`NLM_F_CREATE | NLM_F_EXCL`),
    /// with `RTA_GATEWAY` (or `RTA_VIA` for an IPv4 route through an IPv6 gateway),
    /// `RTA_PRIORITY` when not zero and `RTAX_MTU` when set. A gateway the link can't reach
    /// is refused with ENETUNREACH.
    pub fn add_route(&mut self, ifindex: u32, route: &GuestRoute) -> Result<(), NetlinkError> {
        let what = format!("adding route {} on link {ifindex}", describe_route(route));
        let msg = route_message(ifindex, route).map_err(|detail| NetlinkError::Refused {
            what: what.clone(),
            errno: libc::EINVAL,
            message: Some(detail),
        })?;
        self.ack(
            what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn get_link(&mut self, what: String, msg: LinkMessage) -> Result<HostLink, NetlinkError> {
        let answers = self.request(&what, RouteNetlinkMessage::GetLink(msg), 0)?;
        let bad = |detail: String| NetlinkError::BadAnswer {
            what: what.clone(),
            detail,
        };
        match answers.as_slice() {
            [(uapi::RTM_NEWLINK, payload)] => decode_link(payload).map_err(bad),
            other => Err(bad(format!("{} messages instead of one link", other.len()))),
        }
    }

    /// A request whose only answer is the acknowledgement.
    fn ack(
        &mut self,
        what: String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        match self.request(&what, msg, flags)?.as_slice() {
            [] => Ok(()),
            other => Err(NetlinkError::BadAnswer {
                what,
                detail: format!(
                    "{} unexpected messages before the acknowledgement",
                    other.len()
                ),
            }),
        }
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags`; returns the type and payload of
    /// each message answering it before the kernel's acknowledgement.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        msg.finalize();
        let mut req = vec![0; msg.buffer_len()];
        msg.serialize(&mut req);
        self.send_bytes(&req)
            .map_err(|source| NetlinkError::RequestIo {
                what: what.to_owned(),
                op: "send",
                source,
            })?;

        let bad = |detail: String| NetlinkError::BadAnswer {
            what: what.to_owned(),
            detail,
        };
        let mut answers = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            let len = self.recv_bytes().map_err(|e| match e {
                RecvFail::Timeout => NetlinkError::RequestTimeout {
                    what: what.to_owned(),
                    after: RECV_TIMEOUT,
                },
                RecvFail::TooLarge => bad("datagram larger than the receive buffer".into()),
                RecvFail::Io(source) => NetlinkError::RequestIo {
                    what: what.to_owned(),
                    op: "recv",
                    source,
                },
            })?;
            let datagram = &self.buf[..len];
            let mut offset = 0;
            while offset < datagram.len() {
                let nl = NetlinkBuffer::new_checked(&datagram[offset..])
                    .map_err(|e| bad(format!("at byte {offset}: {e}")))?;
                let end = (offset + align4(nl.length() as usize)).min(datagram.len());
                // Stale answers to an earlier, abandoned request: not ours.
                if nl.sequence_number() == seq {
                    match nl.message_type() {
                        NLMSG_ERROR => {
                            return match parse_ack(nl.flags(), nl.payload()).map_err(bad)? {
                                None => Ok(answers),
                                Some((errno, message)) => Err(NetlinkError::Refused {
                                    what: what.to_owned(),
                                    errno,
                                    message,
                                }),
                            }
                        }
                        NLMSG_NOOP | NLMSG_DONE => {}
                        NLMSG_OVERRUN => return Err(bad("NLMSG_OVERRUN".into())),
                        kind => answers.push((kind, nl.payload().to_vec())),
                    }
                }
                offset = end;
            }
        }
        Err(bad("no acknowledgement after 65536 datagrams".into()))
    }
}

/// An NLMSG_ERROR payload: `None` for an acknowledgement, else the errno and the kernel's
/// extended-ack message (`NETLINK_EXT_ACK`), when it gave one.
fn parse_ack(flags: u16, payload: &[u8]) -> Result<Option<(i32, Option<String>)>, String> {
    let err = ErrorBuffer::new_checked(&payload).map_err(|e| e.to_string())?;
    let Some(code) = err.code() else {
        return Ok(None);
    };
    let errno = code.get().checked_neg().unwrap_or(i32::MAX);
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // struct nlmsgerr: the error, then the request's header, then (unless capped) the
        // request's payload; the attributes follow.
        let echoed = payload
            .get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(0);
        let skip = if flags & NLM_F_CAPPED != 0 {
            4 + 16
        } else {
            4 + align4(echoed.max(16))
        };
        for nla in NlasIterator::new(payload.get(skip..).unwrap_or_default()).flatten() {
            if nla.kind() == NLMSGERR_ATTR_MSG {
                let raw = nla.value().split(|&b| b == 0).next().unwrap_or_default();
                if !raw.is_empty() {
                    message = Some(String::from_utf8_lossy(raw).into_owned());
                }
            }
        }
    }
    Ok(Some((errno, message)))
}

fn link_up_message(ifindex: u32, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.header.change_mask = LinkFlags::Up;
    msg.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    msg
}

fn check_prefix(addr: IpAddr, prefix_len: u8) -> Result<AddressFamily, String> {
    let (family, max) = match addr {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    if prefix_len > max {
        return Err(format!("prefix length {prefix_len} is over {max}"));
    }
    Ok(family)
}

/// RTM_NEWADDR for `addr/prefix_len` on `ifindex`, scoped as `ip address add` would.
fn address_message(
    ifindex: u32,
    addr: IpAddr,
    prefix_len: u8,
    nodad: bool,
) -> Result<AddressMessage, String> {
    let family = check_prefix(addr, prefix_len)?;
    let mut msg = AddressMessage::default();
    msg.header.family = family;
    msg.header.prefix_len = prefix_len;
    msg.header.index = ifindex;
    msg.header.scope = match addr {
        IpAddr::V4(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if IpFamily::is_link_local(&a) => AddressScope::Link,
        _ => AddressScope::Universe,
    };
    let mut flags = AddressFlags::empty();
    if nodad {
        flags |= AddressFlags::Nodad;
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    msg.attributes.push(AddressAttribute::Flags(flags));
    Ok(msg)
}

/// RTM_NEWROUTE for `route` through `ifindex`, in the main table.
fn route_message(ifindex: u32, route: &GuestRoute) -> Result<RouteMessage, String> {
    let family = check_prefix(route.dst, route.dst_len)?;
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.destination_prefix_length = route.dst_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RTPROT_BOOT.into();
    msg.header.kind = RouteType::Unicast;
    // Like `ip route add`: an IPv4 route without a gateway is on the link.
    msg.header.scope = match (route.dst, route.gateway) {
        (IpAddr::V4(_), None) => RouteScope::Link,
        _ => RouteScope::Universe,
    };
    if route.dst_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(route.dst)));
    }
    match route.gateway {
        None => {}
        Some(gw) if gw.is_ipv4() == route.dst.is_ipv4() => msg
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw))),
        Some(IpAddr::V6(gw)) => msg
            .attributes
            .push(RouteAttribute::Via(RouteVia::Inet6(gw))),
        Some(IpAddr::V4(gw)) => {
            return Err(format!("IPv4 gateway {gw} for an IPv6 destination"));
        }
    }
    msg.attributes.push(RouteAttribute::Oif(ifindex));
    if route.priority != 0 {
        msg.attributes
            .push(RouteAttribute::Priority(route.priority));
    }
    if let Some(mtu) = route.mtu {
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    Ok(msg)
}

/// A route as `ip route` would show it: "default via 192.0.2.1", "203.0.113.0/24 via
/// 198.51.100.1 metric 100", "192.0.2.0/24 mtu 1400".
pub fn describe_route(route: &GuestRoute) -> String {
    let mut out = if route.dst_len == 0 && route.dst.is_unspecified() {
        "default".to_owned()
    } else {
        format!("{}/{}", route.dst, route.dst_len)
    };
    if let Some(gw) = route.gateway {
        out += &format!(" via {gw}");
    }
    if route.priority != 0 {
        out += &format!(" metric {}", route.priority);
    }
    if let Some(mtu) = route.mtu {
        out += &format!(" mtu {mtu}");
    }
    out
}

/// One netlink message header, checked against the bytes around it.
struct Frame<'a> {
    len: usize,
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn malformed(dump: Dump, offset: usize, what: impl fmt::Display) -> NetlinkError {
    NetlinkError::Malformed {
        dump,
        offset,
        what: what.to_string(),
    }
}

fn frame_at(dump: Dump, buf: &[u8], offset: usize) -> Result<Frame<'_>, NetlinkError> {
    let nl = NetlinkBuffer::new_checked(&buf[offset..]).map_err(|e| malformed(dump, offset, e))?;
    Ok(Frame {
        len: nl.length() as usize,
        kind: nl.message_type(),
        flags: nl.flags(),
        seq: nl.sequence_number(),
        payload: nl.payload(),
    })
}

/// NLMSG_ERROR: an error code of 0 is an acknowledgement, anything else fails the dump.
fn check_error(dump: Dump, payload: &[u8], offset: usize) -> Result<(), NetlinkError> {
    let err = ErrorBuffer::new_checked(&payload).map_err(|e| malformed(dump, offset, e))?;
    match err.code() {
        None => Ok(()),
        Some(code) => Err(NetlinkError::Kernel {
            dump,
            errno: code.get().checked_neg().unwrap_or(i32::MAX),
        }),
    }
}

/// Walks the messages of one or more dump answers, each ended by NLMSG_DONE, and hands each
/// message of the expected type to `each`, with its payload and offset.
fn walk<T>(
    dump: Dump,
    buf: &[u8],
    expected: u16,
    mut each: impl FnMut(&[u8]) -> Result<Option<T>, String>,
) -> Result<Vec<T>, NetlinkError> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut done = false;
    while offset < buf.len() {
        let frame = frame_at(dump, buf, offset)?;
        if frame.kind != NLMSG_NOOP {
            done = frame.kind == NLMSG_DONE;
        }
        match frame.kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // A dump that failed half-way ends with a negative errno in NLMSG_DONE.
                if let Ok(d) = DoneBuffer::new_checked(&frame.payload) {
                    if d.code() < 0 {
                        return Err(NetlinkError::Kernel {
                            dump,
                            errno: d.code().checked_neg().unwrap_or(i32::MAX),
                        });
                    }
                }
            }
            NLMSG_ERROR => check_error(dump, frame.payload, offset)?,
            NLMSG_OVERRUN => return Err(malformed(dump, offset, "NLMSG_OVERRUN")),
            kind if kind == expected => {
                if let Some(item) = each(frame.payload).map_err(|e| malformed(dump, offset, e))? {
                    out.push(item);
                }
            }
            kind => {
                return Err(malformed(
                    dump,
                    offset,
                    format!("unexpected message type {kind}"),
                ))
            }
        }
        offset += align4(frame.len);
    }
    if !done {
        return Err(malformed(
            dump,
            buf.len(),
            "answer does not end with NLMSG_DONE",
        ));
    }
    Ok(out)
}

/// The attributes of a message, after its fixed header of `header_len` bytes.
fn attributes(payload: &[u8], header_len: usize) -> Result<Vec<NlaBuffer<&[u8]>>, String> {
    let Some(attrs) = payload.get(header_len..) else {
        return Err(format!("message shorter than its {header_len}-byte header"));
    };
    NlasIterator::new(attrs)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad attribute: {e}"))
}

/// RTM_NEWLINK messages from a link dump.
pub fn parse_links(buf: &[u8]) -> Result<Vec<HostLink>, NetlinkError> {
    walk(Dump::Links, buf, uapi::RTM_NEWLINK, |p| {
        decode_link(p).map(Some)
    })
}

fn decode_link(payload: &[u8]) -> Result<HostLink, String> {
    use uapi::*;
    let header = LinkHeader::parse(payload).map_err(|e| e.to_string())?;
    let (mut name, mut mtu, mut mac) = (None, None, None);
    for nla in attributes(payload, IFINFOMSG_LEN)? {
        match nla.kind() {
            // Interface names are bytes to the kernel; don't let a non-UTF-8 one hide a link.
            IFLA_IFNAME => {
                let raw = nla.value().split(|&b| b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(raw).into_owned());
            }
            IFLA_MTU | IFLA_ADDRESS => {
                match LinkAttribute::parse_with_param(&nla, header.interface_family)
                    .map_err(|e| e.to_string())?
                {
                    LinkAttribute::Mtu(m) => mtu = Some(m),
                    LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a).ok().map(MacAddr),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let index = header.index;
    Ok(HostLink {
        index,
        name: name.ok_or_else(|| format!("link {index} without IFLA_IFNAME"))?,
        mac,
        mtu: mtu.ok_or_else(|| format!("link {index} without IFLA_MTU"))?,
        up: header.flags.contains(LinkFlags::Up),
        loopback: header.flags.contains(LinkFlags::Loopback),
    })
}

/// IPv4 and IPv6 addresses (RTM_NEWADDR) from an address dump; other families are skipped.
pub fn parse_addrs(buf: &[u8]) -> Result<Vec<HostAddr>, NetlinkError> {
    walk(Dump::Addrs, buf, uapi::RTM_NEWADDR, decode_addr)
}

fn decode_addr(payload: &[u8]) -> Result<Option<HostAddr>, String> {
    use uapi::*;
    let header = AddressHeader::parse(payload).map_err(|e| e.to_string())?;
    let max_len = match header.family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return Ok(None),
    };
    let (mut address, mut local, mut flags) = (None, None, None);
    for nla in attributes(payload, IFADDRMSG_LEN)? {
        if !matches!(nla.kind(), IFA_ADDRESS | IFA_LOCAL | IFA_FLAGS) {
            continue;
        }
        match AddressAttribute::parse(&nla).map_err(|e| e.to_string())? {
            AddressAttribute::Address(a) => address = Some(a),
            AddressAttribute::Local(a) => local = Some(a),
            AddressAttribute::Flags(f) => flags = Some(f.bits()),
            _ => {}
        }
    }
    let addr = match header.family {
        AddressFamily::Inet => local.or(address),
        _ => address,
    }
    .ok_or_else(|| format!("address on link {} without IFA_ADDRESS", header.index))?;
    if addr.is_ipv4() != (header.family == AddressFamily::Inet) || header.prefix_len > max_len {
        return Err(format!(
            "address {addr}/{} of the wrong family",
            header.prefix_len
        ));
    }
    Ok(Some(HostAddr {
        ifindex: header.index,
        addr,
        prefix_len: header.prefix_len,
        scope: header.scope.into(),
        flags: flags.unwrap_or(u32::from(header.flags.bits())),
    }))
}

/// Routes of the main table (RTM_NEWROUTE) from route dumps, in the kernel's order. Other
/// tables, other families and cloned (cache, exception) routes are skipped.
pub fn parse_routes(buf: &[u8]) -> Result<Vec<HostRoute>, NetlinkError> {
    walk(Dump::Routes, buf, uapi::RTM_NEWROUTE, decode_route)
}

fn route_ip(addr: RouteAddress) -> Result<IpAddr, String> {
    match addr {
        RouteAddress::Inet(a) => Ok(a.into()),
        RouteAddress::Inet6(a) => Ok(a.into()),
        other => Err(format!("not an IP address: {other:?}")),
    }
}

/// An IPv4 route may go through an IPv6 gateway (RTA_VIA); MPLS vias are ignored.
fn via_ip(via: RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(a) => Some(a.into()),
        RouteVia::Inet6(a) => Some(a.into()),
        _ => None,
    }
}

fn leg(hop: RouteNextHop) -> Result<NextHop, String> {
    let mut gateway = None;
    for attr in hop.attributes {
        match attr {
            RouteAttribute::Gateway(a) => gateway = Some(route_ip(a)?),
            RouteAttribute::Via(v) => gateway = via_ip(v),
            _ => {}
        }
    }
    Ok(NextHop {
        gateway,
        oif: (hop.interface_index != 0).then_some(hop.interface_index),
    })
}

fn decode_route(payload: &[u8]) -> Result<Option<HostRoute>, String> {
    use uapi::*;
    let header = RouteHeader::parse(payload).map_err(|e| e.to_string())?;
    let (unspecified, max_len): (IpAddr, u8) = match header.address_family {
        AddressFamily::Inet => (Ipv4Addr::UNSPECIFIED.into(), 32),
        AddressFamily::Inet6 => (Ipv6Addr::UNSPECIFIED.into(), 128),
        _ => return Ok(None),
    };
    if header.flags.contains(RouteFlags::Cloned) {
        return Ok(None);
    }
    if header.destination_prefix_length > max_len {
        return Err(format!(
            "prefix length {}",
            header.destination_prefix_length
        ));
    }
    let nlas = attributes(payload, RTMSG_LEN)?;
    // rtm_table holds tables up to 255; RTA_TABLE, when present, is the whole truth.
    let mut table = u32::from(header.table);
    for nla in nlas.iter().filter(|n| n.kind() == RTA_TABLE) {
        table = netlink_packet_core::parse_u32(nla.value()).map_err(|e| e.to_string())?;
    }
    if table != RT_TABLE_MAIN {
        return Ok(None);
    }

    let mut route = HostRoute {
        dst: unspecified,
        dst_len: header.destination_prefix_length,
        nexthops: Vec::new(),
        priority: 0,
        protocol: header.protocol.into(),
        scope: header.scope.into(),
        kind: header.kind.into(),
        pref_src: None,
        mtu: None,
    };
    let mut single = NextHop {
        gateway: None,
        oif: None,
    };
    let mut multipath = None;
    let param = (header.address_family, header.kind, RouteLwEnCapType::None);
    for nla in nlas {
        if !matches!(
            nla.kind(),
            RTA_DST
                | RTA_OIF
                | RTA_GATEWAY
                | RTA_PRIORITY
                | RTA_PREFSRC
                | RTA_METRICS
                | RTA_MULTIPATH
                | RTA_VIA
        ) {
            continue;
        }
        match RouteAttribute::parse_with_param(&nla, param).map_err(|e| e.to_string())? {
            RouteAttribute::Destination(a) => route.dst = route_ip(a)?,
            RouteAttribute::Oif(i) => single.oif = Some(i),
            RouteAttribute::Gateway(a) => single.gateway = Some(route_ip(a)?),
            RouteAttribute::Via(v) => single.gateway = via_ip(v),
            RouteAttribute::Priority(p) => route.priority = p,
            RouteAttribute::PrefSource(a) => route.pref_src = Some(route_ip(a)?),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(mtu) = m {
                        route.mtu = Some(mtu);
                    }
                }
            }
            RouteAttribute::MultiPath(hops) => {
                multipath = Some(hops.into_iter().map(leg).collect::<Result<Vec<_>, _>>()?)
            }
            _ => {}
        }
    }
    if route.dst.is_ipv4() != unspecified.is_ipv4() {
        return Err(format!("destination {} of the wrong family", route.dst));
    }
    route.nexthops = multipath.unwrap_or_else(|| vec![single]);
    Ok(Some(route))
}

/// Parses the raw answers to the link, address and route dumps (see [`Netlink::dump_raw`]).
pub fn parse_dump(links: &[u8], addrs: &[u8], routes: &[u8]) -> Result<HostNet, NetlinkError> {
    Ok(HostNet {
        links: parse_links(links)?,
        addrs: parse_addrs(addrs)?,
        routes: parse_routes(routes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    const DONE: [u8; 20] = [20, 0, 0, 0, 3, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// Frames `payload` as a netlink message of type `kind`.
    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes());
        out.extend_from_slice(&1u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(out.len()), 0);
        out
    }

    fn route_message(msg: RouteMessage) -> Vec<u8> {
        let mut payload = vec![0; msg.buffer_len()];
        msg.emit(&mut payload);
        message(uapi::RTM_NEWROUTE, &payload)
    }

    fn default_route(table: u8, flags: RouteFlags) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = table;
        msg.header.flags = flags;
        msg.header.kind = netlink_packet_route::route::RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 1))),
            RouteAttribute::Oif(3),
        ];
        msg
    }

    #[test]
    fn empty_dump_is_just_done() {
        assert_eq!(parse_links(&DONE).unwrap(), vec![]);
        assert_eq!(parse_routes(&[DONE, DONE].concat()).unwrap(), vec![]);
    }

    #[test]
    fn missing_done_is_malformed() {
        let err = parse_links(&[]).unwrap_err();
        assert!(
            matches!(
                err,
                NetlinkError::Malformed {
                    dump: Dump::Links,
                    ..
                }
            ),
            "{err}"
        );
        let msg = route_message(default_route(254, RouteFlags::empty()));
        let err = parse_routes(&msg).unwrap_err();
        assert!(err.to_string().contains("NLMSG_DONE"), "{err}");
    }

    #[test]
    fn error_message_carries_errno() {
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        let buf = message(NLMSG_ERROR, &payload);
        let err = parse_addrs(&buf).unwrap_err();
        assert!(
            matches!(err, NetlinkError::Kernel { dump: Dump::Addrs, errno } if errno == libc::EPERM),
            "{err}"
        );
    }

    #[test]
    fn done_with_errno_fails_the_dump() {
        let buf = message(NLMSG_DONE, &(-libc::EBUSY).to_ne_bytes());
        let err = parse_routes(&buf).unwrap_err();
        assert!(matches!(err, NetlinkError::Kernel { errno, .. } if errno == libc::EBUSY));
    }

    #[test]
    fn unexpected_type_is_malformed() {
        let buf = [
            route_message(default_route(254, RouteFlags::empty())),
            DONE.to_vec(),
        ]
        .concat();
        let err = parse_links(&buf).unwrap_err();
        assert!(
            err.to_string().contains("unexpected message type 24"),
            "{err}"
        );
    }

    #[test]
    fn routes_keep_main_table_only_and_skip_clones() {
        let mut other_table = default_route(254, RouteFlags::empty());
        other_table.attributes.push(RouteAttribute::Table(1000));
        let buf = [
            route_message(default_route(255, RouteFlags::empty())),
            route_message(default_route(254, RouteFlags::Cloned)),
            route_message(other_table),
            route_message(default_route(254, RouteFlags::empty())),
            DONE.to_vec(),
        ]
        .concat();
        let routes = parse_routes(&buf).unwrap();
        assert_eq!(
            routes,
            vec![HostRoute {
                dst: Ipv4Addr::UNSPECIFIED.into(),
                dst_len: 0,
                nexthops: vec![NextHop {
                    gateway: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
                    oif: Some(3),
                }],
                priority: 0,
                protocol: 0,
                scope: 0,
                kind: 1,
                pref_src: None,
                mtu: None,
            }]
        );
    }

    #[test]
    fn ipv4_route_via_ipv6_gateway() {
        let mut msg = default_route(254, RouteFlags::empty());
        msg.attributes = vec![
            RouteAttribute::Via(RouteVia::Inet6("fe80::1".parse().unwrap())),
            RouteAttribute::Oif(2),
        ];
        let routes = parse_routes(&[route_message(msg), DONE.to_vec()].concat()).unwrap();
        assert_eq!(
            routes[0].nexthops,
            vec![NextHop {
                gateway: Some("fe80::1".parse().unwrap()),
                oif: Some(2)
            }]
        );
    }

    #[test]
    fn truncated_attribute_is_malformed() {
        let mut buf = route_message(default_route(254, RouteFlags::empty()));
        // Claim a longer RTA_GATEWAY than the message holds.
        buf[16 + 12] = 200;
        buf.extend_from_slice(&DONE);
        let err = parse_routes(&buf).unwrap_err();
        assert!(
            matches!(err, NetlinkError::Malformed { offset: 0, .. }),
            "{err}"
        );
    }

    fn guest_route(dst: &str, len: u8, gw: Option<&str>) -> GuestRoute {
        GuestRoute {
            dst: dst.parse().unwrap(),
            dst_len: len,
            gateway: gw.map(|g| g.parse().unwrap()),
            priority: 0,
            mtu: None,
        }
    }

    fn reparse(msg: RouteMessage) -> HostRoute {
        let buf = [route_message(msg), DONE.to_vec()].concat();
        let mut routes = parse_routes(&buf).unwrap();
        assert_eq!(routes.len(), 1);
        routes.remove(0)
    }

    #[test]
    fn route_request_round_trips() {
        let mut r = guest_route("203.0.113.0", 24, Some("192.0.2.1"));
        r.priority = 100;
        r.mtu = Some(1400);
        let msg = super::route_message(7, &r).unwrap();
        assert_eq!(msg.header.scope, RouteScope::Universe);
        let back = reparse(msg);
        assert_eq!(back.dst, r.dst);
        assert_eq!(back.dst_len, 24);
        assert_eq!(back.priority, 100);
        assert_eq!(back.mtu, Some(1400));
        assert_eq!(back.protocol, RTPROT_BOOT);
        assert_eq!(
            back.nexthops,
            vec![NextHop {
                gateway: r.gateway,
                oif: Some(7)
            }]
        );

        // On-link IPv4 route: link scope, no gateway; default route: no RTA_DST.
        let msg = super::route_message(7, &guest_route("192.0.2.0", 24, None)).unwrap();
        assert_eq!(msg.header.scope, RouteScope::Link);
        let msg = super::route_message(7, &guest_route("0.0.0.0", 0, Some("192.0.2.1"))).unwrap();
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));

        // IPv4 through an IPv6 gateway: RTA_VIA.
        let msg = super::route_message(7, &guest_route("0.0.0.0", 0, Some("fe80::1"))).unwrap();
        assert_eq!(
            reparse(msg).nexthops[0].gateway,
            Some("fe80::1".parse().unwrap())
        );

        assert!(
            super::route_message(7, &guest_route("2001:db8::", 32, Some("192.0.2.1"))).is_err()
        );
        assert!(super::route_message(7, &guest_route("192.0.2.0", 33, None)).is_err());
    }

    #[test]
    fn address_request_flags() {
        let msg = address_message(3, "2001:db8::2".parse().unwrap(), 64, true).unwrap();
        let mut payload = vec![0; msg.buffer_len()];
        msg.emit(&mut payload);
        let buf = [message(uapi::RTM_NEWADDR, &payload), DONE.to_vec()].concat();
        let addrs = parse_addrs(&buf).unwrap();
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[0].ifindex, 3);
        assert_eq!(addrs[0].prefix_len, 64);
        assert_ne!(addrs[0].flags & 0x02, 0, "IFA_F_NODAD");

        let msg = address_message(3, "fe80::2".parse().unwrap(), 64, false).unwrap();
        assert_eq!(msg.header.scope, AddressScope::Link);
        let msg = address_message(3, "192.0.2.2".parse().unwrap(), 24, false).unwrap();
        assert_eq!(msg.header.scope, AddressScope::Universe);
        assert!(address_message(3, "192.0.2.2".parse().unwrap(), 40, false).is_err());
    }

    /// An NLMSG_ERROR payload: errno, the echoed 16-byte header (claiming `echoed_len`), the
    /// echoed request body if any, then an NLMSGERR_ATTR_MSG.
    fn nack(errno: i32, echoed_len: u32, body: &[u8], text: &str) -> Vec<u8> {
        let mut out = (-errno).to_ne_bytes().to_vec();
        out.extend_from_slice(&echoed_len.to_ne_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(body);
        let mut value = text.as_bytes().to_vec();
        value.push(0);
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        out.extend_from_slice(&value);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn acks_and_extended_acks() {
        let ack = [0u8; 20];
        assert_eq!(parse_ack(0, &ack).unwrap(), None);

        let text = "Nexthop has invalid gateway";
        let capped = nack(libc::ENETUNREACH, 60, &[], text);
        assert_eq!(
            parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &capped).unwrap(),
            Some((libc::ENETUNREACH, Some(text.to_owned())))
        );
        // Not capped: the request's 44-byte body comes first.
        let echoed = nack(libc::ENETUNREACH, 60, &[0xaa; 44], text);
        assert_eq!(
            parse_ack(NLM_F_ACK_TLVS, &echoed).unwrap(),
            Some((libc::ENETUNREACH, Some(text.to_owned())))
        );
        // Without NLM_F_ACK_TLVS the attributes are not looked for.
        assert_eq!(
            parse_ack(0, &capped).unwrap(),
            Some((libc::ENETUNREACH, None))
        );
        assert!(parse_ack(0, &[1, 2]).is_err());

        let err = NetlinkError::Refused {
            what: "adding route 203.0.113.0/24 via 198.51.100.1 on link 2".into(),
            errno: libc::ENETUNREACH,
            message: Some(text.into()),
        };
        assert_eq!(
            err.to_string(),
            "adding route 203.0.113.0/24 via 198.51.100.1 on link 2: Network is unreachable \
             (Nexthop has invalid gateway)"
        );
        assert_eq!(
            err.reason(),
            "Network is unreachable (Nexthop has invalid gateway)"
        );
        assert_eq!(err.errno(), Some(libc::ENETUNREACH));
    }

    #[test]
    fn routes_described() {
        assert_eq!(
            describe_route(&guest_route("0.0.0.0", 0, Some("192.0.2.1"))),
            "default via 192.0.2.1"
        );
        let mut r = guest_route("203.0.113.0", 24, Some("198.51.100.1"));
        r.priority = 100;
        r.mtu = Some(1400);
        assert_eq!(
            describe_route(&r),
            "203.0.113.0/24 via 198.51.100.1 metric 100 mtu 1400"
        );
        assert_eq!(describe_route(&guest_route("::", 0, None)), "default");
        assert_eq!(
            describe_route(&guest_route("2001:db8::", 32, None)),
            "2001:db8::/32"
        );
    }
}
