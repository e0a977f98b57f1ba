//! The NETLINK_ROUTE socket: dumps (links, addresses, routes) and requests that change them,
//! each answer collected up to its end and bounded in time and size.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use sans_io::config::host::{HostLink, HostNet};
use sans_io::config::GuestRoute;
use sans_io::wire::MacAddr;

use super::decode::{align4, check_error, decode_link, frame_at, parse_dump};
use super::request::{address_message, describe_route, link_up_message, parse_ack, route_message};
use super::{uapi, Dump, NetlinkError};

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
        let msg = address_message(ifindex, addr, prefix_len, nodad);
        self.create(what, msg.map(RouteNetlinkMessage::NewAddress))
    }

    /// Adds `route` through link `ifindex` to the main table (`NLM_F_CREATE | NLM_F_EXCL`),
    /// with `RTA_GATEWAY` (or `RTA_VIA` for an IPv4 route through an IPv6 gateway),
    /// `RTA_PRIORITY` when not zero and `RTAX_MTU` when set. A gateway the link can't reach
    /// is refused with ENETUNREACH.
    pub fn add_route(&mut self, ifindex: u32, route: &GuestRoute) -> Result<(), NetlinkError> {
        let what = format!("adding route {} on link {ifindex}", describe_route(route));
        let msg = route_message(ifindex, route);
        self.create(what, msg.map(RouteNetlinkMessage::NewRoute))
    }

    /// A request that creates something (`NLM_F_CREATE | NLM_F_EXCL`). One that could not be
    /// built is refused as the kernel would refuse it (EINVAL), with why.
    fn create(
        &mut self,
        what: String,
        built: Result<RouteNetlinkMessage, String>,
    ) -> Result<(), NetlinkError> {
        match built {
            Ok(msg) => self.ack(what, msg, NLM_F_CREATE | NLM_F_EXCL),
            Err(detail) => Err(NetlinkError::Refused {
                what,
                errno: libc::EINVAL,
                message: Some(detail),
            }),
        }
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
