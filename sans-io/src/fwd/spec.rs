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
//! [`PortSpec`]'s [`Display`](fmt::Display) prints the canonical form, which parses back to the
//! same value: a forward to its own ports prints without a target, a one-port range prints as
//! one number, and a target range is always written in full.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

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

/// `[ADDR][%IFACE]/` followed by comma-separated items.
///
/// Parsed values always hold at least one item, every port is non-zero and every range and
/// target is well formed; values built by hand should keep to that for the printed form to
/// parse back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRanges {
    /// The address to bind to, if any.
    pub bind: Option<IpAddr>,
    /// The interface to bind to, if any: non-empty, at most [`IFACE_MAX_LEN`] bytes, without
    /// `/`, `%`, whitespace or control characters.
    pub iface: Option<String>,
    /// The items, in the order they were written.
    pub items: Vec<PortItem>,
}

/// One comma-separated item of a port list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortItem {
    /// `P[-Q][:R[-S]]`: ports to forward.
    Forward(PortMap),
    /// `~P[-Q]`: ports not to forward.
    Exclude(PortRange),
}

/// An inclusive port range; `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// `from` forwarded to `to_first ..= to_first + (from.last - from.first)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    pub from: PortRange,
    pub to_first: u16,
}

/// Why a spec did not parse: a short lowercase reason, without a trailing period, meant to be
/// printed after the option and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl PortRange {
    /// A range of one port.
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// A checked range: both ends non-zero and `first <= last`.
    pub fn new(first: u16, last: u16) -> Result<Self, SpecError> {
        check_port(first)?;
        check_port(last)?;
        if first > last {
            return Err(SpecError(format!("port range {first}-{last} is reversed")));
        }
        Ok(PortRange { first, last })
    }

    /// Whether `port` lies in the range.
    pub const fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// How many ports the range holds (0 if reversed).
    pub const fn count(&self) -> u32 {
        if self.first > self.last {
            0
        } else {
            self.last as u32 - self.first as u32 + 1
        }
    }
}

impl PortMap {
    /// `range` forwarded to the same ports.
    pub const fn identity(range: PortRange) -> Self {
        PortMap {
            from: range,
            to_first: range.first,
        }
    }

    /// The target of `port`, or `None` if `port` is not in `from` or its target would be past
    /// 65535.
    pub fn target(&self, port: u16) -> Option<u16> {
        if !self.from.contains(port) {
            return None;
        }
        self.to_first.checked_add(port - self.from.first)
    }

    /// The target range, or `None` if it would go past 65535 or `from` is reversed.
    pub fn to_range(&self) -> Option<PortRange> {
        let span = self.from.last.checked_sub(self.from.first)?;
        let last = self.to_first.checked_add(span)?;
        Some(PortRange {
            first: self.to_first,
            last,
        })
    }
}

impl PortRanges {
    /// Whether any item forwards ports (as opposed to only excluding them).
    pub fn has_forwards(&self) -> bool {
        self.items
            .iter()
            .any(|item| matches!(item, PortItem::Forward(_)))
    }

    /// Whether an exclusion item (`~P[-Q]`) covers `port`. Ports that are merely not listed
    /// are not "excluded" in this sense.
    pub fn excludes(&self, port: u16) -> bool {
        self.items
            .iter()
            .any(|item| matches!(item, PortItem::Exclude(r) if r.contains(port)))
    }

    /// The `(from, to)` port pairs this list forwards, sorted by `from`, one pair per `from`.
    ///
    /// * Exclusions win over forwards, wherever they appear in the list.
    /// * When forwards overlap, the later item decides the target.
    /// * A list with exclusions but no forwards stands for every port from 1 to 65535 except
    ///   the excluded ones and except the `ephemeral` range (the host's ephemeral ports),
    ///   each forwarded to itself. With explicit forwards, `ephemeral` is ignored.
    /// * An empty list forwards nothing.
    ///
    /// Port 0, and ports whose target would be past 65535, are never forwarded (parsed values
    /// hold neither).
    pub fn expand(&self, ephemeral: RangeInclusive<u16>) -> Vec<(u16, u16)> {
        let mut free = NextFree::new();
        let mut any_exclusion = false;
        for item in &self.items {
            if let PortItem::Exclude(r) = item {
                any_exclusion = true;
                free.claim(r.first, r.last, |_| {});
            }
        }

        let mut out = Vec::new();
        if !self.has_forwards() {
            if any_exclusion {
                let mut port = free.find(1);
                while let Ok(p) = u16::try_from(port) {
                    if !ephemeral.contains(&p) {
                        out.push((p, p));
                    }
                    port = free.find(port + 1);
                }
            }
            return out;
        }

        // Later items win: walk backwards, so that each port is claimed by the last item
        // naming it, and skipped by the earlier ones.
        for item in self.items.iter().rev() {
            if let PortItem::Forward(map) = item {
                free.claim(map.from.first, map.from.last, |p| {
                    if let Some(to) = map.target(p) {
                        out.push((p, to));
                    }
                });
            }
        }
        out.sort_unstable_by_key(|&(from, _)| from);
        out
    }
}

/// "Smallest unclaimed port at or after p", as a union-find with path compression, so that
/// claiming overlapping ranges touches each port once however many items name it.
struct NextFree(Vec<u32>);

impl NextFree {
    /// Every port unclaimed except 0; index 65536 is the end sentinel.
    fn new() -> Self {
        let mut next: Vec<u32> = (0..=65536).collect();
        next[0] = 1;
        NextFree(next)
    }

    /// The smallest unclaimed port `>= port`, or 65536 if none.
    fn find(&mut self, port: u32) -> u32 {
        let mut root = port;
        while self.0[root as usize] != root {
            root = self.0[root as usize];
        }
        let mut cur = port;
        while self.0[cur as usize] != root {
            let next = self.0[cur as usize];
            self.0[cur as usize] = root;
            cur = next;
        }
        root
    }

    /// Claim the unclaimed ports of `first..=last`, calling `f` on each, in increasing order.
    fn claim(&mut self, first: u16, last: u16, mut f: impl FnMut(u16)) {
        let mut port = self.find(u32::from(first));
        while port <= u32::from(last) {
            if let Ok(p) = u16::try_from(port) {
                f(p);
            }
            self.0[port as usize] = port + 1;
            port = self.find(port + 1);
        }
    }
}

fn err(reason: String) -> SpecError {
    SpecError(reason)
}

fn check_port(port: u16) -> Result<u16, SpecError> {
    if port == 0 {
        Err(err("port 0 is not a valid port".into()))
    } else {
        Ok(port)
    }
}

/// A decimal port number, 1 to 65535. `item` is the whole item, for messages.
fn parse_port(text: &str, item: &str) -> Result<u16, SpecError> {
    if text.is_empty() {
        return Err(err(format!("missing port number in '{item}'")));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!("'{text}' is not a port number")));
    }
    let value = text.bytes().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?
            .checked_add(u32::from(b - b'0'))
            .filter(|&v| v <= u32::from(u16::MAX))
    });
    match value.and_then(|v| u16::try_from(v).ok()) {
        Some(port) => check_port(port),
        None => Err(err(format!("port {text} is greater than 65535"))),
    }
}

/// `P` or `P-Q`.
fn parse_range(text: &str, item: &str) -> Result<PortRange, SpecError> {
    match text.split_once('-') {
        None => parse_port(text, item).map(PortRange::single),
        Some((first, last)) => PortRange::new(parse_port(first, item)?, parse_port(last, item)?),
    }
}

/// One comma-separated item.
fn parse_item(item: &str) -> Result<PortItem, SpecError> {
    if item.is_empty() {
        return Err(err("empty item in port list".into()));
    }
    if let Some(rest) = item.strip_prefix('~') {
        if rest.contains(':') {
            return Err(err(format!("excluded ports '{item}' cannot have a target")));
        }
        return parse_range(rest, item).map(PortItem::Exclude);
    }

    let (source, target) = match item.split_once(':') {
        Some((source, target)) => (source, Some(target)),
        None => (item, None),
    };
    let from = parse_range(source, item)?;
    let to_first = match target {
        None => from.first,
        Some(target) => {
            let to = parse_range(target, item)?;
            let span = from.last - from.first;
            if to.first == to.last && span > 0 {
                // `P-Q:R`: a target range of the same length, starting at R.
                if to.first.checked_add(span).is_none() {
                    return Err(err(format!(
                        "target range {}-{} goes past port 65535",
                        to.first,
                        u32::from(to.first) + u32::from(span)
                    )));
                }
            } else if to.last - to.first != span {
                return Err(err(format!(
                    "target range {to} is not the same length as {from}"
                )));
            }
            to.first
        }
    };
    Ok(PortItem::Forward(PortMap { from, to_first }))
}

/// An interface name after `%`.
fn check_iface(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(err("missing interface name after '%'".into()));
    }
    if name.len() > IFACE_MAX_LEN {
        return Err(err(format!(
            "interface name '{name}' is longer than {IFACE_MAX_LEN} bytes"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == '%' || c.is_whitespace() || c.is_control())
    {
        return Err(err(format!(
            "interface name '{}' contains '{}'",
            name.escape_debug(),
            c.escape_debug()
        )));
    }
    Ok(())
}

/// `ADDR`, `ADDR%IFACE` or `%IFACE`, without the trailing `/`.
fn parse_prefix(prefix: &str) -> Result<(Option<IpAddr>, Option<String>), SpecError> {
    if prefix.is_empty() {
        return Err(err("missing address or interface before '/'".into()));
    }
    let (addr, iface) = match prefix.split_once('%') {
        Some((addr, iface)) => (addr, Some(iface)),
        None => (prefix, None),
    };
    let bind = if addr.is_empty() {
        None
    } else {
        match addr.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => return Err(err(format!("'{addr}' is not an IP address"))),
        }
    };
    let iface = match iface {
        Some(name) => {
            check_iface(name)?;
            Some(name.to_owned())
        }
        None => None,
    };
    Ok((bind, iface))
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "none" | "auto" | "all")
}

impl FromStr for PortSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(PortSpec::None),
            "auto" => Ok(PortSpec::Auto),
            "all" => Ok(PortSpec::All),
            _ => s.parse().map(PortSpec::Ports),
        }
    }
}

/// Parses the explicit-list form only: keywords are an error here.
impl FromStr for PortRanges {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (bind, iface, list) = match s.split_once('/') {
            Some((prefix, list)) => {
                let (bind, iface) = parse_prefix(prefix)?;
                if list.is_empty() {
                    return Err(err(format!("missing ports after '{prefix}/'")));
                }
                if is_keyword(list) {
                    return Err(err(format!(
                        "'{list}' cannot follow an address or interface"
                    )));
                }
                (bind, iface, list)
            }
            None => (None, None, s),
        };
        if list.is_empty() {
            return Err(err("empty port list".into()));
        }
        let items = list.split(',').map(parse_item).collect::<Result<_, _>>()?;
        Ok(PortRanges { bind, iface, items })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.from)?;
        if self.to_first == self.from.first {
            return Ok(());
        }
        if self.from.first == self.from.last {
            return write!(f, ":{}", self.to_first);
        }
        // Computed wide so that an out-of-range value built by hand prints without panicking
        // (and fails to parse back).
        let span = i32::from(self.from.last) - i32::from(self.from.first);
        write!(f, ":{}-{}", self.to_first, i32::from(self.to_first) + span)
    }
}

impl fmt::Display for PortItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortItem::Forward(map) => write!(f, "{map}"),
            PortItem::Exclude(range) => write!(f, "~{range}"),
        }
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(bind) = self.bind {
            write!(f, "{bind}")?;
        }
        if let Some(iface) = &self.iface {
            write!(f, "%{iface}")?;
        }
        if self.bind.is_some() || self.iface.is_some() {
            f.write_str("/")?;
        }
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::None => f.write_str("none"),
            PortSpec::Auto => f.write_str("auto"),
            PortSpec::All => f.write_str("all"),
            PortSpec::Ports(ranges) => write!(f, "{ranges}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(s: &str) -> Result<PortSpec, SpecError> {
        s.parse()
    }

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    fn fwd(first: u16, last: u16, to_first: u16) -> PortItem {
        PortItem::Forward(PortMap {
            from: range(first, last),
            to_first,
        })
    }

    fn excl(first: u16, last: u16) -> PortItem {
        PortItem::Exclude(range(first, last))
    }

    fn ports(bind: Option<IpAddr>, iface: Option<&str>, items: Vec<PortItem>) -> PortSpec {
        PortSpec::Ports(PortRanges {
            bind,
            iface: iface.map(str::to_owned),
            items,
        })
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    /// Parses `s`, checks the structure, and checks that it prints back as `canonical`.
    fn check(s: &str, expected: PortSpec, canonical: &str) {
        assert_eq!(parse(s), Ok(expected.clone()), "parsing {s:?}");
        assert_eq!(expected.to_string(), canonical, "printing {s:?}");
    }

    fn error(s: &str) -> String {
        match parse(s) {
            Ok(spec) => panic!("{s:?} parsed as {spec:?}"),
            Err(SpecError(reason)) => reason,
        }
    }

    fn ranges(s: &str) -> PortRanges {
        match parse(s) {
            Ok(PortSpec::Ports(r)) => r,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    // The examples of the man page.

    #[test]
    fn man_single_port() {
        check("22", ports(None, None, vec![fwd(22, 22, 22)]), "22");
    }

    #[test]
    fn man_single_port_mapped() {
        check("22:23", ports(None, None, vec![fwd(22, 22, 23)]), "22:23");
    }

    #[test]
    fn man_two_ports() {
        check(
            "22,25",
            ports(None, None, vec![fwd(22, 22, 22), fwd(25, 25, 25)]),
            "22,25",
        );
    }

    #[test]
    fn man_range() {
        check("22-80", ports(None, None, vec![fwd(22, 80, 22)]), "22-80");
    }

    #[test]
    fn man_range_mapped() {
        check(
            "22-80:32-90",
            ports(None, None, vec![fwd(22, 80, 32)]),
            "22-80:32-90",
        );
    }

    #[test]
    fn man_bind_address() {
        check(
            "192.0.2.1/22",
            ports(v4(192, 0, 2, 1), None, vec![fwd(22, 22, 22)]),
            "192.0.2.1/22",
        );
    }

    #[test]
    fn man_bind_address_and_iface() {
        check(
            "192.0.2.1%eth0/22",
            ports(v4(192, 0, 2, 1), Some("eth0"), vec![fwd(22, 22, 22)]),
            "192.0.2.1%eth0/22",
        );
    }

    #[test]
    fn man_bind_iface() {
        check(
            "%eth0/22",
            ports(None, Some("eth0"), vec![fwd(22, 22, 22)]),
            "%eth0/22",
        );
    }

    #[test]
    fn man_range_with_exclusion() {
        check(
            "2000-5000,~3000-3010",
            ports(None, None, vec![fwd(2000, 5000, 2000), excl(3000, 3010)]),
            "2000-5000,~3000-3010",
        );
    }

    #[test]
    fn man_bind_range_with_exclusion() {
        check(
            "192.0.2.1/20-30,~25",
            ports(v4(192, 0, 2, 1), None, vec![fwd(20, 30, 20), excl(25, 25)]),
            "192.0.2.1/20-30,~25",
        );
    }

    #[test]
    fn man_exclusion_only() {
        check(
            "~20000-20010",
            ports(None, None, vec![excl(20000, 20010)]),
            "~20000-20010",
        );
    }

    // IPv6, and what Podman and libvirt emit.

    #[test]
    fn ipv6_bind_address() {
        check(
            "2001:db8::1/22",
            ports(
                Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
                None,
                vec![fwd(22, 22, 22)],
            ),
            "2001:db8::1/22",
        );
    }

    #[test]
    fn ipv6_loopback_with_iface() {
        check(
            "::1%lo/8080",
            ports(
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                Some("lo"),
                vec![fwd(8080, 8080, 8080)],
            ),
            "::1%lo/8080",
        );
    }

    #[test]
    fn ipv6_link_local_with_iface() {
        check(
            "fe80::1%eth0/22:2222",
            ports(
                Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1))),
                Some("eth0"),
                vec![fwd(22, 22, 2222)],
            ),
            "fe80::1%eth0/22:2222",
        );
    }

    #[test]
    fn podman_one_port_ranges() {
        check(
            "8080-8080:80-80",
            ports(None, None, vec![fwd(8080, 8080, 80)]),
            "8080:80",
        );
    }

    #[test]
    fn podman_bound_range() {
        check(
            "127.0.0.1/8080-8081:80-81",
            ports(v4(127, 0, 0, 1), None, vec![fwd(8080, 8081, 80)]),
            "127.0.0.1/8080-8081:80-81",
        );
    }

    #[test]
    fn keywords() {
        check("none", PortSpec::None, "none");
        check("auto", PortSpec::Auto, "auto");
        check("all", PortSpec::All, "all");
    }

    #[test]
    fn keywords_after_a_prefix_are_errors() {
        assert_eq!(
            error("192.0.2.1/all"),
            "'all' cannot follow an address or interface"
        );
        assert_eq!(
            error("%eth0/none"),
            "'none' cannot follow an address or interface"
        );
        assert_eq!(
            error("::1/auto"),
            "'auto' cannot follow an address or interface"
        );
    }

    #[test]
    fn keywords_are_exact() {
        assert_eq!(error("All"), "'All' is not a port number");
        assert_eq!(error(" none"), "' none' is not a port number");
        assert_eq!(error("all,22"), "'all' is not a port number");
    }

    // Normalisation.

    #[test]
    fn target_equal_to_source_prints_plain() {
        check("22:22", ports(None, None, vec![fwd(22, 22, 22)]), "22");
        check(
            "22-80:22-80",
            ports(None, None, vec![fwd(22, 80, 22)]),
            "22-80",
        );
    }

    #[test]
    fn one_port_range_prints_as_one_number() {
        check("22-22", ports(None, None, vec![fwd(22, 22, 22)]), "22");
        check("~25-25", ports(None, None, vec![excl(25, 25)]), "~25");
    }

    #[test]
    fn single_target_after_range_is_shorthand() {
        check(
            "22-80:32",
            ports(None, None, vec![fwd(22, 80, 32)]),
            "22-80:32-90",
        );
        check(
            "65000-65035:65500",
            ports(None, None, vec![fwd(65000, 65035, 65500)]),
            "65000-65035:65500-65535",
        );
    }

    #[test]
    fn leading_zeros_are_accepted() {
        check(
            "0022:00023",
            ports(None, None, vec![fwd(22, 22, 23)]),
            "22:23",
        );
    }

    #[test]
    fn port_bounds() {
        check(
            "1-65535",
            ports(None, None, vec![fwd(1, 65535, 1)]),
            "1-65535",
        );
        check(
            "65535:1",
            ports(None, None, vec![fwd(65535, 65535, 1)]),
            "65535:1",
        );
    }

    #[test]
    fn items_keep_order_and_duplicates() {
        check(
            "~25,80,22,80:8080",
            ports(
                None,
                None,
                vec![
                    excl(25, 25),
                    fwd(80, 80, 80),
                    fwd(22, 22, 22),
                    fwd(80, 80, 8080),
                ],
            ),
            "~25,80,22,80:8080",
        );
    }

    #[test]
    fn iface_names() {
        check(
            "%abcdefghijklmno/1",
            ports(None, Some("abcdefghijklmno"), vec![fwd(1, 1, 1)]),
            "%abcdefghijklmno/1",
        );
        check(
            "%eth0.100:1/1",
            ports(None, Some("eth0.100:1"), vec![fwd(1, 1, 1)]),
            "%eth0.100:1/1",
        );
        assert_eq!(
            error("%abcdefghijklmnop/1"),
            "interface name 'abcdefghijklmnop' is longer than 15 bytes"
        );
        // 8 two-byte characters: 16 bytes.
        assert_eq!(
            error("%éééééééé/1"),
            "interface name 'éééééééé' is longer than 15 bytes"
        );
        assert_eq!(error("%/22"), "missing interface name after '%'");
        assert_eq!(error("192.0.2.1%/22"), "missing interface name after '%'");
        assert_eq!(error("%a%b/22"), "interface name 'a%b' contains '%'");
        assert_eq!(error("%a b/22"), "interface name 'a b' contains ' '");
        assert_eq!(error("%a\tb/22"), "interface name 'a\\tb' contains '\\t'");
    }

    #[test]
    fn error_messages() {
        let cases = [
            ("", "empty port list"),
            ("22,,25", "empty item in port list"),
            ("22,", "empty item in port list"),
            (",22", "empty item in port list"),
            ("80-22", "port range 80-22 is reversed"),
            ("22:90-32", "port range 90-32 is reversed"),
            (
                "22-80:32-91",
                "target range 32-91 is not the same length as 22-80",
            ),
            (
                "22:32-33",
                "target range 32-33 is not the same length as 22",
            ),
            (
                "22-80:65500",
                "target range 65500-65558 goes past port 65535",
            ),
            ("0", "port 0 is not a valid port"),
            ("0-10", "port 0 is not a valid port"),
            ("22:0", "port 0 is not a valid port"),
            ("~0", "port 0 is not a valid port"),
            ("000", "port 0 is not a valid port"),
            ("abc", "'abc' is not a port number"),
            ("65536", "port 65536 is greater than 65535"),
            (
                "99999999999999999999999",
                "port 99999999999999999999999 is greater than 65535",
            ),
            ("0x16", "'0x16' is not a port number"),
            ("+22", "'+22' is not a port number"),
            ("-22", "missing port number in '-22'"),
            ("22-", "missing port number in '22-'"),
            ("22:", "missing port number in '22:'"),
            ("~", "missing port number in '~'"),
            ("22 ", "'22 ' is not a port number"),
            ("22, 25", "' 25' is not a port number"),
            ("22-25-30", "'25-30' is not a port number"),
            ("22:23:24", "'23:24' is not a port number"),
            ("~~22", "'~22' is not a port number"),
            ("22~", "'22~' is not a port number"),
            ("~22:23", "excluded ports '~22:23' cannot have a target"),
            ("192.0.2.999/22", "'192.0.2.999' is not an IP address"),
            ("[::1]/22", "'[::1]' is not an IP address"),
            ("192.0.2.1/", "missing ports after '192.0.2.1/'"),
            ("%eth0/", "missing ports after '%eth0/'"),
            ("/22", "missing address or interface before '/'"),
            ("192.0.2.1/22/23", "'22/23' is not a port number"),
            ("192.0.2.1", "'192.0.2.1' is not a port number"),
        ];
        for (input, reason) in cases {
            assert_eq!(error(input), reason, "input {input:?}");
            assert!(!reason.ends_with('.'));
        }
    }

    // PortRange and PortMap helpers.

    #[test]
    fn range_and_map_helpers() {
        assert_eq!(PortRange::new(1, 65535), Ok(range(1, 65535)));
        assert!(PortRange::new(0, 5).is_err());
        assert!(PortRange::new(5, 4).is_err());
        assert_eq!(PortRange::single(7), range(7, 7));
        assert_eq!(range(1, 65535).count(), 65535);
        assert_eq!(range(5, 4).count(), 0);
        assert!(range(20, 30).contains(20) && range(20, 30).contains(30));
        assert!(!range(20, 30).contains(31));

        let map = PortMap {
            from: range(22, 80),
            to_first: 32,
        };
        assert_eq!(map.target(22), Some(32));
        assert_eq!(map.target(80), Some(90));
        assert_eq!(map.target(81), None);
        assert_eq!(map.to_range(), Some(range(32, 90)));
        let overflowing = PortMap {
            from: range(1, 10),
            to_first: 65530,
        };
        assert_eq!(overflowing.to_range(), None);
        assert_eq!(overflowing.target(6), Some(65535));
        assert_eq!(overflowing.target(7), None);
        assert_eq!(PortMap::identity(range(3, 4)).to_range(), Some(range(3, 4)));
    }

    #[test]
    fn printing_out_of_range_values_does_not_panic() {
        let spec = ports(
            None,
            None,
            vec![PortItem::Forward(PortMap {
                from: range(1, 10),
                to_first: 65530,
            })],
        );
        assert_eq!(spec.to_string(), "1-10:65530-65539");
        assert!(parse(&spec.to_string()).is_err());
        let reversed = ports(None, None, vec![fwd(10, 1, 20)]);
        assert_eq!(reversed.to_string(), "10-1:20-11");
    }

    // has_forwards, excludes, expand.

    #[test]
    fn has_forwards() {
        assert!(ranges("22").has_forwards());
        assert!(ranges("~20,22").has_forwards());
        assert!(!ranges("~20000-20010").has_forwards());
        assert!(!ranges("~1,~2-3").has_forwards());
    }

    #[test]
    fn excludes() {
        let r = ranges("2000-5000,~3000-3010,~4000");
        assert!(r.excludes(3000) && r.excludes(3010) && r.excludes(4000));
        assert!(!r.excludes(2999) && !r.excludes(3011) && !r.excludes(2000));
        assert!(!ranges("22").excludes(23));
    }

    const EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

    #[test]
    fn expand_plain_and_mapped() {
        assert_eq!(ranges("22").expand(EPHEMERAL), vec![(22, 22)]);
        assert_eq!(
            ranges("25,22:23").expand(EPHEMERAL),
            vec![(22, 23), (25, 25)]
        );
        assert_eq!(
            ranges("8080-8082:80-82").expand(EPHEMERAL),
            vec![(8080, 80), (8081, 81), (8082, 82)]
        );
    }

    #[test]
    fn expand_later_item_wins() {
        assert_eq!(
            ranges("80-82,81:8081").expand(EPHEMERAL),
            vec![(80, 80), (81, 8081), (82, 82)]
        );
        assert_eq!(
            ranges("81:8081,80-82").expand(EPHEMERAL),
            vec![(80, 80), (81, 81), (82, 82)]
        );
        assert_eq!(ranges("22,22,22").expand(EPHEMERAL), vec![(22, 22)]);
    }

    #[test]
    fn expand_subtracts_exclusions_wherever_they_are() {
        let expected: Vec<_> = (20..=30).filter(|&p| p != 25).map(|p| (p, p)).collect();
        assert_eq!(ranges("20-30,~25").expand(EPHEMERAL), expected);
        assert_eq!(ranges("~25,20-30").expand(EPHEMERAL), expected);
        assert_eq!(ranges("22,~22").expand(EPHEMERAL), vec![]);
    }

    #[test]
    fn expand_forwards_ignore_ephemeral() {
        assert_eq!(
            ranges("40000-40001").expand(EPHEMERAL),
            vec![(40000, 40000), (40001, 40001)]
        );
    }

    #[test]
    fn expand_exclusions_only() {
        let got = ranges("~20000-20010").expand(EPHEMERAL);
        let expected: Vec<_> = (1..=65535u16)
            .filter(|p| !(20000..=20010).contains(p) && !EPHEMERAL.contains(p))
            .map(|p| (p, p))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got.first(), Some(&(1, 1)));
        assert_eq!(got.last(), Some(&(65535, 65535)));

        // An empty ephemeral range subtracts nothing.
        #[allow(clippy::reversed_empty_ranges)]
        let got = ranges("~2-65535").expand(1..=0);
        assert_eq!(got, vec![(1, 1)]);
        assert_eq!(ranges("~1-65535").expand(EPHEMERAL), vec![]);
    }

    #[test]
    fn expand_empty_list() {
        let empty = PortRanges {
            bind: None,
            iface: None,
            items: vec![],
        };
        assert_eq!(empty.expand(EPHEMERAL), vec![]);
        assert!(!empty.has_forwards());
    }

    #[test]
    fn expand_many_overlapping_items_is_cheap() {
        let spec = vec!["1-65535"; 2000].join(",") + ",~2-65535";
        assert_eq!(ranges(&spec).expand(EPHEMERAL), vec![(1, 1)]);
    }

    // Property tests.

    fn arb_range() -> impl Strategy<Value = PortRange> {
        (1..=u16::MAX)
            .prop_flat_map(|first| {
                let max_span = u16::MAX - first;
                let span = prop_oneof![
                    3 => Just(0u16),
                    3 => 0..=max_span.min(100),
                    1 => 0..=max_span,
                ];
                (Just(first), span)
            })
            .prop_map(|(first, span)| range(first, first + span))
    }

    fn arb_map() -> impl Strategy<Value = PortMap> {
        arb_range().prop_flat_map(|from| {
            let span = from.last - from.first;
            let to_first = prop_oneof![Just(from.first), 1..=u16::MAX - span];
            to_first.prop_map(move |to_first| PortMap { from, to_first })
        })
    }

    fn arb_item() -> impl Strategy<Value = PortItem> {
        prop_oneof![
            3 => arb_map().prop_map(PortItem::Forward),
            1 => arb_range().prop_map(PortItem::Exclude),
        ]
    }

    fn arb_iface() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9._:-]{1,15}", "[^/%\\s\\p{Cc}]{1,3}",]
    }

    impl Arbitrary for PortSpec {
        type Parameters = ();
        type Strategy = BoxedStrategy<PortSpec>;

        fn arbitrary_with((): ()) -> Self::Strategy {
            let ranges = (
                proptest::option::of(any::<IpAddr>()),
                proptest::option::of(arb_iface()),
                proptest::collection::vec(arb_item(), 1..8),
            )
                .prop_map(|(bind, iface, items)| {
                    PortSpec::Ports(PortRanges { bind, iface, items })
                });
            prop_oneof![
                1 => Just(PortSpec::None),
                1 => Just(PortSpec::Auto),
                1 => Just(PortSpec::All),
                12 => ranges,
            ]
            .boxed()
        }
    }

    /// A naive model of `expand`, for small ranges.
    fn expand_model(r: &PortRanges, ephemeral: RangeInclusive<u16>) -> Vec<(u16, u16)> {
        let excluded = |p: u16| r.excludes(p);
        let mut map = BTreeMap::new();
        if r.has_forwards() {
            for item in &r.items {
                if let PortItem::Forward(m) = item {
                    for p in m.from.first..=m.from.last {
                        map.insert(p, m.target(p));
                    }
                }
            }
        } else if r.items.iter().any(|i| matches!(i, PortItem::Exclude(_))) {
            for p in 1..=u16::MAX {
                map.insert(p, Some(p));
            }
            map.retain(|p, _| !ephemeral.contains(p));
        }
        map.retain(|&p, _| !excluded(p));
        map.into_iter()
            .filter_map(|(p, to)| Some((p, to?)))
            .collect()
    }

    fn arb_small_range() -> impl Strategy<Value = PortRange> {
        (1u16..200, 0u16..50).prop_map(|(first, span)| range(first, first + span))
    }

    fn arb_small_ranges() -> impl Strategy<Value = PortRanges> {
        let item = prop_oneof![
            3 => (arb_small_range(), 1u16..1000)
                .prop_map(|(from, to_first)| PortItem::Forward(PortMap { from, to_first })),
            1 => arb_small_range().prop_map(PortItem::Exclude),
            1 => arb_small_range().prop_map(|r| PortItem::Forward(PortMap::identity(r))),
        ];
        proptest::collection::vec(item, 0..8).prop_map(|items| PortRanges {
            bind: None,
            iface: None,
            items,
        })
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(spec in any::<PortSpec>()) {
            let printed = spec.to_string();
            prop_assert_eq!(printed.parse::<PortSpec>(), Ok(spec.clone()), "printed {:?}", printed);
            // And printing is canonical: a second round prints the same text.
            prop_assert_eq!(spec.to_string(), printed);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = s.parse::<PortSpec>();
        }

        #[test]
        fn parse_never_panics_on_grammar_alphabet(s in "[0123456789,:~/%.abcdefl-]{0,40}") {
            if let Ok(spec) = s.parse::<PortSpec>() {
                // Whatever parses prints to something that parses to the same value.
                prop_assert_eq!(spec.to_string().parse::<PortSpec>(), Ok(spec));
            }
        }

        #[test]
        fn expand_matches_model(r in arb_small_ranges(), lo in 1u16..100, len in 0u16..100) {
            let ephemeral = lo..=lo.saturating_add(len);
            let got = r.expand(ephemeral.clone());
            prop_assert_eq!(&got, &expand_model(&r, ephemeral));
            prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(got.iter().all(|&(from, to)| from != 0 && to != 0 && !r.excludes(from)));
        }
    }
}
