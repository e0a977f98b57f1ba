//! The parsed model of an explicit port list: ranges, their targets and exclusions.

use std::net::IpAddr;

use super::SpecError;

/// `[ADDR][%IFACE]/` followed by comma-separated items.
///
/// Parsed values always hold at least one item, every port is non-zero and every range and
/// target is well formed; values built by hand should keep to that for the printed form to
/// parse back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRanges {
    /// The address to bind to: `None` (no address, or `*`) is every address of both
    /// families; `0.0.0.0` is every IPv4 address and `::` every IPv6 address.
    pub bind: Option<IpAddr>,
    /// The interface to bind to, if any: non-empty, at most
    /// [`IFACE_MAX_LEN`](super::IFACE_MAX_LEN) bytes, without `/`, `%`, whitespace or control
    /// characters.
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
    /// `auto` in a list (`8000-8010,auto`, `ADDR/auto`): the list's ports only while bound
    /// on the other side (the C original's scan flag).
    Auto,
    /// `all[:TADDR]` in a list (`ADDR/all`): stands for every port when the list forwards
    /// no explicit ones, to `TADDR` if given.
    All(Option<IpAddr>),
}

/// An inclusive port range; `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// `from` forwarded to `to_first ..= to_first + (from.last - from.first)`, at `to_addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    pub from: PortRange,
    pub to_first: u16,
    /// The address forwarded to (`P:TADDR/TP`); `None` is the guest's (or namespace's) own.
    pub to_addr: Option<IpAddr>,
}

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
            to_addr: None,
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
}

/// Port 0 is never a valid port, in a spec or a range built from one.
pub(super) fn check_port(port: u16) -> Result<u16, SpecError> {
    if port == 0 {
        Err(SpecError("port 0 is not a valid port".into()))
    } else {
        Ok(port)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
            to_addr: None,
        };
        assert_eq!(map.target(22), Some(32));
        assert_eq!(map.target(80), Some(90));
        assert_eq!(map.target(81), None);
        assert_eq!(map.to_range(), Some(range(32, 90)));
        let overflowing = PortMap {
            from: range(1, 10),
            to_first: 65530,
            to_addr: None,
        };
        assert_eq!(overflowing.to_range(), None);
        assert_eq!(overflowing.target(6), Some(65535));
        assert_eq!(overflowing.target(7), None);
        assert_eq!(PortMap::identity(range(3, 4)).to_range(), Some(range(3, 4)));
    }

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
}
