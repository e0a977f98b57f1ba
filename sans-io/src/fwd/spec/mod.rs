//! The port-forwarding spec grammar of `-t`, `-u`, `-T` and `-U`.
//!
//! A spec is either one of the keywords `none`, `auto` or `all`, or an explicit list of ports.
//! Whether a keyword makes sense for a given option and mode is for the caller to decide; this
//! module only parses and prints.
//!
//! An explicit list may start with a listening prefix that ends at the first `/`:
//!
//! * `ADDR/` binds to one address, IPv4 or IPv6, plain or in brackets (`::1/`, `[::1]/`,
//!   `[192.0.2.1]/`). `0.0.0.0/` is every IPv4 address only, `::/` every IPv6 address only;
//! * `*/`, like no prefix at all, is every address of both families;
//! * `ADDR%IFACE/` (or `[ADDR]%IFACE/`, `*%IFACE/`) binds to that address on one interface,
//! * `%IFACE/` binds to any address on one interface.
//!
//! After the prefix comes a comma-separated list of items, none of which may be empty:
//!
//! * `P` forwards one port, `P-Q` an inclusive range (`P <= Q`);
//! * either may be followed by a target: `:R` or `:R-S` to forward to other ports, `:TADDR`
//!   to forward to the same ports at another address, or `:TADDR/R[-S]` for both. TADDR is
//!   IPv4 or IPv6, plain (`fd00::2/80`: an IPv6 address ends at the last `/`) or in brackets.
//!   A target range must be as long as the source range; a single target port after a source
//!   range is short for the range of the same length starting there (`22-80:32` is
//!   `22-80:32-90`);
//! * `~P` or `~P-Q` excludes ports, and takes no target;
//! * `auto` makes the list's forwards apply only while bound on the other side, and `all`
//!   (or `all:TADDR`) stands for every port when the list names none (the C original's
//!   `ADDR/all`, `ADDR/auto`, `8000-8010,auto`). Alone and without a prefix, `auto` and
//!   `all` are the keywords instead; `*/auto` is the one-item list.
//!
//! As in the C original, a prefix is tried first: in `8080:fd00::2/80` the text before the
//! `/` is a valid IPv6 address, so it listens there on port 80. Write a prefix
//! (`*/8080:fd00::2/80`) or brackets (`8080:[fd00::2]/80`) for the target.
//!
//! Ports are decimal numbers from 1 to 65535, with no sign and no whitespace. A list made only
//! of exclusions stands for every port except those (see [`PortRanges::expand`]); the parsed
//! form keeps the items exactly as written, in order.
//!
//! [`PortSpec`]'s [`Display`](std::fmt::Display) prints the canonical form, which parses back
//! to the same value: a forward to its own ports prints without a target, a one-port range
//! prints as one number, a target range is always written in full, a listening address
//! without brackets (and `*` not at all), an IPv6 target address in brackets.
//!
//! One concern a file: `ranges` is the parsed model (ranges, targets, exclusions), `parse` the
//! grammar, `print` the canonical form, and `expand` what a list forwards, as `(from, to)`
//! port pairs, and the forwarding rules a spec adds ([`PortSpec::to_rules`]).

mod expand;
mod parse;
mod print;
mod ranges;
#[cfg(test)]
mod test_support;

pub use ranges::{PortItem, PortMap, PortRange, PortRanges};

/// The longest interface name Linux accepts, in bytes (`IFNAMSIZ - 1`).
pub const IFACE_MAX_LEN: usize = 15;

/// One `-t/-u/-T/-U` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// `none`: forward nothing.
    None,
    /// `auto`: follow the ports bound on the other side (pasta).
    Auto,
    /// `all`: every unbound, non-ephemeral port (passt).
    All,
    /// An explicit list.
    Ports(PortRanges),
}

/// Why a spec did not parse: a short lowercase reason, without a trailing period, meant to be
/// printed after the option and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);
