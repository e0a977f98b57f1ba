//! Host network discovery over rtnetlink (NETLINK_ROUTE): links, addresses, routes.
//!
//! Messages are framed, decoded and emitted with the rust-netlink crates
//! (`netlink-packet-core` 0.9, `netlink-packet-route` 0.34, `netlink-sys` 0.9 for the plain
//! blocking socket): they are maintained, and they also emit the messages we will need to *set*
//! links, addresses and routes in a namespace. We decode, one by one, only the attributes we
//! use, so that an attribute the crate cannot parse (newer kernel, exotic link) hides nothing.
//!
//! [`Netlink`] does the I/O (`socket`); `request` builds the messages that change links,
//! addresses and routes and reads the kernel's acknowledgements; [`parse_links`],
//! [`parse_addrs`], [`parse_routes`] and [`parse_dump`] (`decode`) are pure functions over the
//! raw bytes the kernel answered, so that tests can feed them canned dumps (see
//! `testdata/netlink/`).

mod decode;
mod request;
mod socket;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::time::Duration;

pub use decode::{parse_addrs, parse_dump, parse_links, parse_routes};
pub use request::describe_route;
pub use socket::Netlink;

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
