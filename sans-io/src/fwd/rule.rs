//! Forwarding rules as a table that can change while the program runs.
//!
//! A [`ForwardRule`] is one line of a forwarding table: a protocol, where to listen, a port
//! range, and where it leads (ports, and optionally an address other than the guest's). It is
//! the unit the control socket and `pesto` exchange, and what a `-t/-u/-T/-U` spec becomes
//! once expanded into ranges. A [`ForwardTable`] holds the rules of one direction (inbound:
//! `-t`/`-u`, the C original's `HOST` interface; outbound: `-T`/`-U`, its `SPLICE`) and
//! decides what is a conflict, what an exact match, and where a connection goes.
//!
//! The semantics follow the C original's `fwd_rule_add()` with one deliberate difference:
//! adding a rule identical to one already in the table succeeds and changes nothing (Podman
//! assumes so on reload), where the original reports a conflict. A rule that overlaps another
//! without being identical is still a conflict.

use std::fmt;
use std::net::IpAddr;

use crate::flow::Proto;

/// At most this many rules in one table, as in the C original (`MAX_FWD_RULES`).
pub const MAX_RULES: usize = 256;

/// Where a rule listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listen {
    /// No address, or `*`: every address of both families.
    DualStackAny,
    /// One address. `0.0.0.0` is every IPv4 address, `::` every IPv6 address.
    Addr(IpAddr),
}

impl Listen {
    /// Whether a connection that reached local address `local` is one this listens for.
    pub fn accepts(&self, local: IpAddr) -> bool {
        let local = local.to_canonical();
        match *self {
            Listen::DualStackAny => true,
            Listen::Addr(a) => {
                let a = a.to_canonical();
                a == local || (a.is_unspecified() && a.is_ipv4() == local.is_ipv4())
            }
        }
    }

    /// Whether some address is accepted by both (the original's `inany_matches`): the two
    /// families' wildcards never overlap each other, a wildcard overlaps every address of its
    /// family, and the dual-stack wildcard overlaps everything.
    pub fn overlaps(&self, other: &Listen) -> bool {
        match (*self, *other) {
            (Listen::DualStackAny, _) | (_, Listen::DualStackAny) => true,
            (Listen::Addr(a), Listen::Addr(b)) => {
                let (a, b) = (a.to_canonical(), b.to_canonical());
                a == b || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
            }
        }
    }

    /// The address to bind, `None` for both families' wildcard.
    pub fn bind_addr(&self) -> Option<IpAddr> {
        match *self {
            Listen::DualStackAny => None,
            Listen::Addr(a) => Some(a),
        }
    }
}

/// One forwarding rule: `proto` connections to `listen` (on `iface`, if given) at ports
/// `first..=last` go to ports `to..` at `target` (the guest's own address when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForwardRule {
    pub proto: Proto,
    pub listen: Listen,
    /// The interface to bind to: non-empty, at most `IFNAMSIZ - 1` bytes.
    pub iface: Option<String>,
    pub first: u16,
    pub last: u16,
    /// Where `first` goes; the rest of the range follows in order.
    pub to: u16,
    /// The address connections go to; `None` is the guest's (or namespace's) own.
    pub target: Option<IpAddr>,
    /// Best effort: ports of the range that can't be bound are skipped, not an error (the
    /// original's `WEAK`, set for ranges it expands itself such as `all`).
    pub weak: bool,
    /// `auto`: only the ports found bound on the other side are listened on (the original's
    /// `SCAN`).
    pub scan: bool,
}

impl ForwardRule {
    /// A rule forwarding `first..=last` to the same ports of the guest, on every address.
    pub fn ports(proto: Proto, first: u16, last: u16) -> Self {
        ForwardRule {
            proto,
            listen: Listen::DualStackAny,
            iface: None,
            first,
            last,
            to: first,
            target: None,
            weak: false,
            scan: false,
        }
    }

    /// Whether the two rules could claim the same connection: same protocol, overlapping
    /// addresses and port ranges. Interfaces are not compared, as in the original.
    pub fn conflicts_with(&self, other: &ForwardRule) -> bool {
        self.proto == other.proto
            && self.listen.overlaps(&other.listen)
            && self.first <= other.last
            && other.first <= self.last
    }

    /// Where a `proto` connection to `local`:`port` goes under this rule: the target address
    /// (`None`: the guest's own) and port.
    pub fn map(&self, proto: Proto, local: IpAddr, port: u16) -> Option<(Option<IpAddr>, u16)> {
        if proto != self.proto || port < self.first || port > self.last {
            return None;
        }
        if !self.listen.accepts(local) {
            return None;
        }
        // `to + (last - first)` fits: rules are checked when made (see `check`).
        Some((self.target, self.to.wrapping_add(port - self.first)))
    }

    /// Whether the rule is well formed: a non-empty range of non-zero ports whose target range
    /// fits in 1..=65535, and a target of the listening family (a dual-stack rule can only
    /// target one family's address if it listens on one family).
    pub fn check(&self) -> Result<(), RuleError> {
        if self.first == 0 || self.first > self.last || self.to == 0 {
            return Err(RuleError::BadRange(self.to_string()));
        }
        if u32::from(self.to) + u32::from(self.last - self.first) > u32::from(u16::MAX) {
            return Err(RuleError::BadRange(self.to_string()));
        }
        if let Some(t) = self.target {
            let t = t.to_canonical();
            if t.is_multicast() || t.is_unspecified() {
                return Err(RuleError::BadTarget(t));
            }
            match self.listen {
                Listen::DualStackAny if t.is_ipv4() => {
                    return Err(RuleError::DualStackToV4(t));
                }
                Listen::Addr(a) if a.to_canonical().is_ipv4() != t.is_ipv4() => {
                    return Err(RuleError::FamilyMismatch(a, t));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The original's format (`fwd_rule_fmt`), which `pesto` prints:
/// `TCP *:8080  =>  10.88.0.2:80`, `UDP [::1]%lo:53-54  =>  53-54 (best effort)`.
impl fmt::Display for ForwardRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        };
        match self.listen {
            Listen::DualStackAny => write!(f, "{proto} *")?,
            Listen::Addr(IpAddr::V6(a)) => write!(f, "{proto} [{a}]")?,
            Listen::Addr(a) => write!(f, "{proto} {a}")?,
        }
        if let Some(iface) = &self.iface {
            write!(f, "%{iface}")?;
        }
        write!(f, ":{}", self.first)?;
        if self.last != self.first {
            write!(f, "-{}", self.last)?;
        }
        f.write_str("  =>  ")?;
        match self.target {
            Some(IpAddr::V6(t)) => write!(f, "[{t}]:")?,
            Some(t) => write!(f, "{t}:")?,
            None => {}
        }
        write!(f, "{}", self.to)?;
        if self.last != self.first {
            write!(
                f,
                "-{}",
                u32::from(self.to) + u32::from(self.last.saturating_sub(self.first))
            )?;
        }
        if self.weak {
            f.write_str(" (best effort)")?;
        }
        if self.scan {
            f.write_str(" (auto-scan)")?;
        }
        Ok(())
    }
}

/// Why a rule can't be added or deleted. The texts are the C original's, which callers copy
/// into their own error messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("Forwarding configuration conflict: {0} versus {1}")]
    Conflict(String, String),
    #[error("Too many rules (maximum {MAX_RULES})")]
    TooMany,
    #[error("Invalid port range in rule {0}")]
    BadRange(String),
    #[error("Multicast or unspecified target address {0}")]
    BadTarget(IpAddr),
    #[error("Dual stack forward to IPv4 address {0} unsupported")]
    DualStackToV4(IpAddr),
    #[error("Forward from {0} to {1} unsupported: the families differ")]
    FamilyMismatch(IpAddr, IpAddr),
    #[error("Couldn't find forwarding rule to delete: {0}")]
    NotFound(String),
    #[error("Specifier {0} conflicts with rule {1}, but doesn't match it, can't delete")]
    InexactDelete(String, String),
}

/// What [`ForwardTable::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The rule is new and now in the table.
    New,
    /// An identical rule was already there: nothing changed.
    AlreadyPresent,
}

/// The rules of one direction, in the order they were added. At most [`MAX_RULES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardTable {
    rules: Vec<ForwardRule>,
}

impl ForwardTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table holding `rules` as they are, unchecked but for their number: what a server
    /// lists, which `pesto` shows and sends back even if it breaks the rules (as the C one
    /// does), and edits with [`add`](Self::add) and [`remove`](Self::remove).
    pub fn from_rules_unchecked(rules: Vec<ForwardRule>) -> Result<Self, RuleError> {
        if rules.len() > MAX_RULES {
            return Err(RuleError::TooMany);
        }
        Ok(ForwardTable { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[ForwardRule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds a rule unless it is malformed or conflicts with one already present; a rule
    /// identical to one present changes nothing and succeeds.
    pub fn add(&mut self, rule: ForwardRule) -> Result<Added, RuleError> {
        rule.check()?;
        if self.rules.contains(&rule) {
            return Ok(Added::AlreadyPresent);
        }
        if let Some(other) = self.rules.iter().find(|r| r.conflicts_with(&rule)) {
            return Err(RuleError::Conflict(rule.to_string(), other.to_string()));
        }
        if self.rules.len() >= MAX_RULES {
            return Err(RuleError::TooMany);
        }
        self.rules.push(rule);
        Ok(Added::New)
    }

    /// Adds a rule the way the command line does: later options win over earlier ones for the
    /// ports they share, so no conflict check (lookups take the last matching rule).
    pub fn push_unchecked(&mut self, rule: ForwardRule) -> Result<(), RuleError> {
        rule.check()?;
        if self.rules.len() >= MAX_RULES {
            return Err(RuleError::TooMany);
        }
        self.rules.push(rule);
        Ok(())
    }

    /// Removes the rule exactly equal to `rule`; a rule that only overlaps it is an error.
    pub fn remove(&mut self, rule: &ForwardRule) -> Result<ForwardRule, RuleError> {
        if let Some(i) = self.rules.iter().position(|r| r == rule) {
            return Ok(self.rules.remove(i));
        }
        match self.rules.iter().find(|r| r.conflicts_with(rule)) {
            Some(other) => Err(RuleError::InexactDelete(
                rule.to_string(),
                other.to_string(),
            )),
            None => Err(RuleError::NotFound(rule.to_string())),
        }
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Where a `proto` connection to `local`:`port` goes: the last matching rule decides (as
    /// the command line's later options override earlier ones).
    pub fn map(&self, proto: Proto, local: IpAddr, port: u16) -> Option<(Option<IpAddr>, u16)> {
        self.rules
            .iter()
            .rev()
            .find_map(|r| r.map(proto, local, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rule(listen: Listen, first: u16, last: u16, to: u16) -> ForwardRule {
        ForwardRule {
            listen,
            to,
            ..ForwardRule::ports(Proto::Tcp, first, last)
        }
    }

    #[test]
    fn family_wildcards_do_not_overlap_each_other() {
        let any4 = Listen::Addr(v4("0.0.0.0"));
        let any6 = Listen::Addr(v4("::"));
        assert!(!any4.overlaps(&any6));
        assert!(any4.overlaps(&Listen::Addr(v4("127.0.0.1"))));
        assert!(any6.overlaps(&Listen::Addr(v4("::1"))));
        assert!(!any6.overlaps(&Listen::Addr(v4("127.0.0.1"))));
        assert!(Listen::DualStackAny.overlaps(&any6));
        assert!(!Listen::Addr(v4("127.0.0.1")).overlaps(&Listen::Addr(v4("127.0.0.2"))));
        // A v4-mapped address is its IPv4 self.
        assert!(any4.accepts(v4("::ffff:10.0.0.1")));
        assert!(!any6.accepts(v4("10.0.0.1")));
    }

    #[test]
    fn identical_add_is_a_no_op_and_overlap_a_conflict() {
        let mut t = ForwardTable::new();
        let r = rule(Listen::Addr(v4("0.0.0.0")), 8080, 8080, 80);
        assert_eq!(t.add(r.clone()), Ok(Added::New));
        assert_eq!(t.add(r.clone()), Ok(Added::AlreadyPresent));
        assert_eq!(t.len(), 1);
        let other_target = rule(Listen::Addr(v4("0.0.0.0")), 8080, 8080, 81);
        assert!(matches!(t.add(other_target), Err(RuleError::Conflict(..))));
        // The other family's wildcard is no conflict.
        assert_eq!(
            t.add(rule(Listen::Addr(v4("::")), 8080, 8080, 80)),
            Ok(Added::New)
        );
        assert!(matches!(
            t.add(rule(Listen::DualStackAny, 8000, 9000, 8000)),
            Err(RuleError::Conflict(..))
        ));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn delete_needs_an_exact_match() {
        let mut t = ForwardTable::new();
        let r = rule(Listen::DualStackAny, 100, 200, 100);
        t.add(r.clone()).unwrap();
        assert!(matches!(
            t.remove(&rule(Listen::DualStackAny, 150, 150, 150)),
            Err(RuleError::InexactDelete(..))
        ));
        assert!(matches!(
            t.remove(&rule(Listen::DualStackAny, 300, 300, 300)),
            Err(RuleError::NotFound(..))
        ));
        assert_eq!(t.remove(&r), Ok(r));
        assert!(t.is_empty());
    }

    #[test]
    fn lookups_follow_the_last_matching_rule_and_the_range_offset() {
        let mut t = ForwardTable::new();
        t.push_unchecked(rule(Listen::DualStackAny, 1000, 1010, 2000))
            .unwrap();
        let mut to_container = rule(Listen::Addr(v4("0.0.0.0")), 1005, 1005, 80);
        to_container.target = Some(v4("10.88.0.2"));
        t.push_unchecked(to_container).unwrap();
        let local = v4("192.0.2.1");
        assert_eq!(t.map(Proto::Tcp, local, 1003), Some((None, 2003)));
        assert_eq!(
            t.map(Proto::Tcp, local, 1005),
            Some((Some(v4("10.88.0.2")), 80))
        );
        // Over IPv6 the IPv4-only rule does not apply.
        assert_eq!(
            t.map(Proto::Tcp, v4("2001:db8::1"), 1005),
            Some((None, 2005))
        );
        assert_eq!(t.map(Proto::Udp, local, 1003), None);
        assert_eq!(t.map(Proto::Tcp, local, 999), None);
    }

    #[test]
    fn malformed_rules_and_a_full_table_are_errors() {
        let mut t = ForwardTable::new();
        assert!(matches!(
            t.add(rule(Listen::DualStackAny, 10, 5, 10)),
            Err(RuleError::BadRange(_))
        ));
        assert!(matches!(
            t.add(rule(Listen::DualStackAny, 65000, 65535, 65500)),
            Err(RuleError::BadRange(_))
        ));
        let mut dual_to_v4 = rule(Listen::DualStackAny, 80, 80, 80);
        dual_to_v4.target = Some(v4("10.0.0.2"));
        assert!(matches!(
            t.add(dual_to_v4),
            Err(RuleError::DualStackToV4(_))
        ));
        let mut cross = rule(Listen::Addr(v4("0.0.0.0")), 80, 80, 80);
        cross.target = Some(v4("fd00::2"));
        assert!(matches!(t.add(cross), Err(RuleError::FamilyMismatch(..))));
        for p in 1..=MAX_RULES as u16 {
            t.add(rule(Listen::DualStackAny, p, p, p)).unwrap();
        }
        assert_eq!(
            t.add(rule(Listen::DualStackAny, 1000, 1000, 1000)),
            Err(RuleError::TooMany)
        );
    }

    #[test]
    fn formats_as_the_original_does() {
        let mut r = rule(Listen::Addr(v4("0.0.0.0")), 8080, 8080, 80);
        r.target = Some(v4("10.88.0.2"));
        assert_eq!(r.to_string(), "TCP 0.0.0.0:8080  =>  10.88.0.2:80");
        let mut r = rule(Listen::Addr(v4("::1")), 53, 54, 53);
        r.proto = Proto::Udp;
        r.iface = Some("lo".into());
        r.weak = true;
        assert_eq!(r.to_string(), "UDP [::1]%lo:53-54  =>  53-54 (best effort)");
        let mut r = rule(Listen::DualStackAny, 1, 65535, 1);
        r.scan = true;
        assert_eq!(r.to_string(), "TCP *:1-65535  =>  1-65535 (auto-scan)");
    }
}
