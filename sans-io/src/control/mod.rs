//! The control-socket protocol of `pasta -c PATH` and `pesto`, as the C original speaks it
//! (protocol version 2), as a pure codec: bytes in, messages or a precise error out, and
//! messages into a caller's buffer. No I/O here; the socket server and `pesto` drive it.
//!
//! A connection carries, server to client: the [`Hello`], then each forwarding table as
//! `u8 pif`, a pif info `{char name[128]; u32 caps; u32 count}` and `count` rule records, then
//! `u8 0`. Client to server (only when it changes something): each table as `u8 pif`,
//! `u32 count`, `count` rule records, then `u8 0`; the server replaces its tables with these.
//! All integers are big-endian. A rule record is 56 bytes (see [`record`]).
//!
//! Details the C sources leave open, decided here (and only here):
//! * Padding: none. Every C struct involved has no padding with natural alignment (hello
//!   8+4+4+4, pif info 128+4+4, rule 16+16+16+2+2+2+1+1), so "packed" and "natural" agree.
//! * Versions: only 2 is spoken. Above 2 and 0 (the C's "experimental") are refused with
//!   the C pesto's texts; 1 (whose record has no target address) with a text of ours: the C
//!   pesto lets it through and would misread its records.
//! * Pif numbers other than 1 to 3 are refused, in both directions (the C pesto would list
//!   a table of an unknown pif; no server sends one).
//! * A `DUAL_STACK_ANY` record must carry `::` as its address (the C comment says "should
//!   be"; the C code always writes it). Anything else is refused rather than guessed at.
//! * The target address `::` means "none"; `::ffff:0.0.0.0` is taken as a (bad) IPv4 target,
//!   which the table's checks then refuse.
//! * Interface and pif names are NUL-terminated within their fields; bytes after the NUL are
//!   ignored (the C copies with `snprintf`, so they are zero) and a name that is not UTF-8 is
//!   refused (Linux names are bytes, but the command line and our tables hold text).
//! * A pif that appears twice in one stream is refused (the C pesto refuses it in a listing
//!   and never sends it; the C server would silently merge the two).
//! * The order of the tables is free; the C server sends them in pif number order.
//! * Rules are checked here only for what the record can express (protocol, flags, names);
//!   ranges, targets and conflicts are [`ForwardTable::add`](crate::fwd::rule::ForwardTable)'s.
//!
//! One extension of ours, which either side may lack: after an update, our server answers
//! with a status message (applied, or refused and why) before closing; see [`status`].

mod collect;
mod decoder;
mod encoder;
mod hello;
pub mod record;
pub mod status;

use std::fmt;

pub use collect::{ReceivedTable, TablesBuilder};
pub use decoder::{Decoder, Event, Stream, TableHeader};
pub use encoder::{
    encode_listing, encode_listing_table, encode_update_table, write_end, EncodeError,
};
pub use hello::Hello;
pub use status::{decode_status, encode_status, Status, StatusError, STATUS_MAGIC};

use crate::fwd::rule::MAX_RULES;

/// The protocol version we speak.
pub const VERSION: u32 = 2;
/// The server's hello magic.
pub const MAGIC: [u8; 8] = *b"basil:s\0";
/// The size of a pif name field (`PIF_NAME_SIZE`).
pub const PIF_NAME_SIZE: usize = 128;
/// The size of an interface name field (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;
/// The bytes of a hello.
pub const HELLO_LEN: usize = 8 + 4 + 4 + 4;
/// The bytes of a pif info (after its pif byte).
pub const PIF_INFO_LEN: usize = PIF_NAME_SIZE + 4 + 4;
/// The bytes of one rule record.
pub const RULE_LEN: usize = 16 + 16 + IFNAMSIZ + 2 + 2 + 2 + 1 + 1;

/// An interface of passt/pasta that has a forwarding table (the C original's `enum
/// pif_type`; 0 is `PIF_NONE`, which ends a list of tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pif {
    /// The host side: the inbound table (`-t`/`-u`).
    Host = 1,
    /// The guest's tap device.
    Tap = 2,
    /// pasta's namespace side: the outbound table (`-T`/`-U`).
    Splice = 3,
}

impl Pif {
    pub const ALL: [Pif; 3] = [Pif::Host, Pif::Tap, Pif::Splice];

    /// The number on the wire.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The pif of a wire number; `None` for 0 and unknown numbers.
    pub fn from_number(n: u8) -> Option<Pif> {
        Pif::ALL.into_iter().find(|p| p.number() == n)
    }

    /// The C original's name (`pif_type_str`), which `pesto -C` takes and the listing shows.
    pub fn name(self) -> &'static str {
        match self {
            Pif::Host => "HOST",
            Pif::Tap => "TAP",
            Pif::Splice => "SPLICE",
        }
    }

    /// The pif of a name, exactly as [`Pif::name`] spells it.
    pub fn from_name(name: &str) -> Option<Pif> {
        Pif::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Pif {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a table of the server can hold (the C original's `FWD_CAP_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caps(pub u32);

impl Caps {
    pub const IPV4: Caps = Caps(1);
    pub const IPV6: Caps = Caps(2);
    pub const TCP: Caps = Caps(4);
    pub const UDP: Caps = Caps(8);
    /// `auto` forwarding.
    pub const SCAN: Caps = Caps(16);
    /// Binding to an interface (`%IFNAME`).
    pub const IFNAME: Caps = Caps(32);

    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Caps {
    type Output = Caps;
    fn bitor(self, rhs: Caps) -> Caps {
        Caps(self.0 | rhs.0)
    }
}

/// Why bytes on the control socket are not a valid message. The texts that a C caller may
/// show are the C original's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("Bad magic number from server")]
    BadMagic,
    #[error("Unknown server protocol version {0} > {VERSION}")]
    NewerVersion(u32),
    #[error("Unsupported experimental server protocol")]
    ExperimentalVersion,
    #[error("Unsupported server protocol version {0} (this one speaks {VERSION})")]
    OlderVersion(u32),
    #[error("Server has unexpected pif name size ({0} not {PIF_NAME_SIZE})")]
    BadPifNameSize(u32),
    #[error("Server has unexpected IFNAMSIZ ({0} not {IFNAMSIZ})")]
    BadIfnamsiz(u32),
    #[error("Unknown pif {0} in forwarding tables")]
    UnknownPif(u8),
    #[error("Received duplicate interface identifier {0}")]
    DuplicatePif(Pif),
    #[error("Received {0} rules (maximum {MAX_RULES})")]
    TooManyRules(u32),
    #[error("Pif name was not NULL terminated")]
    PifNameNotTerminated,
    #[error("Interface name was not NULL terminated")]
    IfnameNotTerminated,
    #[error("Name in control message is not UTF-8")]
    NameNotUtf8,
    #[error("Unsupported protocol {0} in forwarding rule")]
    BadProto(u8),
    #[error("Reserved flags 0x{0:02x} set in forwarding rule")]
    ReservedFlags(u8),
    #[error("Dual-stack forwarding rule with address {0} (must be ::)")]
    DualStackWithAddress(std::net::Ipv6Addr),
    #[error("Control message after the end of the forwarding tables")]
    AfterEnd,
}
