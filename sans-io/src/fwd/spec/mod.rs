//! The port-forwarding spec grammar of `-t`, `-u`, `-T` and `-U`.
//!
//! A spec is either one of the keywords `none`, `auto` or `all`, or an explicit list of ports.
//! Whether a keyword makes sense for a given option and mode is for the caller to decide; this
//! module only parses and prints.
//!
//! An explicit list may start with a binding prefix that ends at the first `/`:
//!
//! * `ADDR/` binds to one address (IPv4 or IPv6, written plainly, without brackets),
//! * `ADDR%IFACE/` binds to that address on one interface,
//! * `%IFACE/` binds to any address on one interface.
//!
//! After the prefix comes a comma-separated list of items, none of which may be empty:
//!
//! * `P` forwards one port, `P-Q` an inclusive range (`P <= Q`);
//! * either may be followed by `:R` or `:R-S` to forward to other ports. A target range must
//!   be as long as the source range; a single target port after a source range is short for
//!   the range of the same length starting there (`22-80:32` is `22-80:32-90`);
//! * `~P` or `~P-Q` excludes ports, and takes no target.
//!
//! Ports are decimal numbers from 1 to 65535, with no sign and no whitespace. A list made only
//! of exclusions stands for every port except those (see [`PortRanges::expand`]); the parsed
//! form keeps the items exactly as written, in order.
//!
//! [`PortSpec`]'s [`Display`](std::fmt::Display) prints the canonical form, which parses back
//! to the same value: a forward to its own ports prints without a target, a one-port range
//! prints as one number, and a target range is always written in full.
//!
//! One concern a file: `ranges` is the parsed model (ranges, targets, exclusions), `parse` the
//! grammar, `print` the canonical form, and `expand` what a list forwards, as `(from, to)`
//! port pairs.

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
