//! The forwarding the engine holds and changes while it runs: one [`ForwardTable`] per
//! direction, built from the command line at start and replaced in one step later (by the
//! control socket), with what the driver must listen on worked out as a diff of sockets, so
//! that unchanged listeners keep running and established flows are never touched.
//!
//! - [`Direction::Inbound`] is `-t`/`-u` (the C original's `HOST` table): listeners on the
//!   host, connections into the guest. The accept paths look connections up here
//!   ([`Forwards::map_in`]).
//! - [`Direction::Outbound`] is `-T`/`-U` (its `SPLICE` table, pasta's only): listeners on the
//!   namespace's loopback relayed to the host's. Only the driver's relays use it; the engine
//!   keeps it so that both tables change the same way.
//!
//! `auto` is kept beside the tables, not as a rule in them: it listens on whatever the other
//! side has bound, which the driver scans for, and a rule covering every port would conflict
//! with every explicit rule added later (and the C `pesto` checks conflicts on its own copy of
//! the table). Explicit rules win over `auto` for the ports they name; the scan leaves those
//! ports alone. A table given at run time can't turn `auto` on or off.
//!
//! Changing a table is two steps, so that a port in use changes nothing:
//! [`Forwards::plan`] checks the new table and returns a [`ForwardChange`] whose
//! [`ListenerDiff`] says which sockets to open and which to close; the driver opens the new
//! ones (undoing them if one fails), then [`Forwards::commit`]s and closes the old ones.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use super::rule::{ForwardRule, ForwardTable, Listen, RuleError};
use super::{ForwardMode, PortSpec};
use crate::config::Config;
use crate::flow::Proto;

/// Which table: the C original's pif names, which `pesto -C` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `-t`/`-u`: from the host into the guest (`HOST`).
    Inbound,
    /// `-T`/`-U`: from the namespace's loopback to the host's (`SPLICE`, pasta only).
    Outbound,
}

impl Direction {
    /// The C original's name for the table (`pif_type_str`).
    pub fn pif_name(self) -> &'static str {
        match self {
            Direction::Inbound => "HOST",
            Direction::Outbound => "SPLICE",
        }
    }
}

/// One socket a forwarding table listens with. Inbound: on the host, at `addr` (a wildcard
/// for a rule on every address), on `iface` if given; where its connections go is the
/// engine's lookup. Outbound: in the namespace, at `addr`, relayed to host port `to` (so a
/// rule leading elsewhere is another socket).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenSocket {
    pub proto: ProtoKey,
    pub addr: SocketAddr,
    pub iface: Option<String>,
    /// Outbound only: the host loopback port its traffic goes to.
    pub to: Option<u16>,
}

/// [`Proto`], ordered, so that socket sets (and the diffs the driver works through) come out
/// in the same order every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtoKey {
    Tcp,
    Udp,
}

impl From<Proto> for ProtoKey {
    fn from(p: Proto) -> Self {
        match p {
            Proto::Tcp => ProtoKey::Tcp,
            Proto::Udp => ProtoKey::Udp,
        }
    }
}

impl From<ProtoKey> for Proto {
    fn from(p: ProtoKey) -> Self {
        match p {
            ProtoKey::Tcp => Proto::Tcp,
            ProtoKey::Udp => Proto::Udp,
        }
    }
}

impl ListenSocket {
    pub fn proto(&self) -> Proto {
        self.proto.into()
    }
}

/// What the driver must do for a table to take effect: sockets to open (each with whether it
/// is required: a required one that can't be opened fails the change; a best-effort one, of
/// `weak` rules only, is skipped) and sockets to close. Sockets in both tables are in neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerDiff {
    pub open: Vec<(ListenSocket, bool)>,
    pub close: Vec<ListenSocket>,
}

impl ListenerDiff {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.close.is_empty()
    }
}

/// A checked replacement of one table, for [`Forwards::commit`] once the driver has opened
/// [`ListenerDiff::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardChange {
    pub direction: Direction,
    pub table: ForwardTable,
    pub diff: ListenerDiff,
}

/// Why a table can't be used; the texts are the C original's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("{0} forward, but {0} not enabled")]
    ProtocolDisabled(&'static str),
    #[error("{0} forward, but {0} not enabled")]
    FamilyDisabled(&'static str),
    #[error("Automatic forwarding (auto) can only be set on the command line: {0}")]
    ScanAtRunTime(String),
    #[error("Target address not supported for outbound forwarding: {0}")]
    OutboundTarget(String),
    #[error("Interface not supported for outbound forwarding: {0}")]
    OutboundIface(String),
    #[error("No outbound forwarding in passt: {0}")]
    NoOutbound(String),
    #[error(transparent)]
    Listen(#[from] super::apply::ApplyError),
}

/// The engine's forwarding: see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwards {
    inbound: ForwardTable,
    outbound: ForwardTable,
    /// `auto`, per direction and protocol (`[dir][proto]`, TCP first).
    auto: [[bool; 2]; 2],
    /// Which families listen without an address (the configuration's).
    v4: bool,
    v6: bool,
    /// Target addresses of the inbound rules: what comes from them through the tap is a
    /// forwarded peer answering, never the guest's own address to learn.
    targets: Vec<IpAddr>,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

fn proto_index(p: Proto) -> usize {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
    }
}

impl Forwards {
    /// The command line's forwarding (`config.forwarding`), as tables: one rule per run of
    /// consecutive ports, in the order the options came (a later option wins over an earlier
    /// one for the ports they share, as lookups take the last matching rule). `all` is
    /// best-effort rules around the host's `ephemeral` ports; `auto` is kept beside. A
    /// disabled protocol gets no rules. Fails when the options make more than
    /// [`MAX_RULES`](super::rule::MAX_RULES) rules in one table; the tables then hold those
    /// that fit (the driver refuses to start on the error, see `Engine::with_options`).
    pub fn from_config(
        config: &Config,
        ephemeral: RangeInclusive<u16>,
    ) -> (Forwards, Option<RuleError>) {
        let mut f = Forwards {
            v4: config.ip4.is_some(),
            v6: config.ip6.is_some(),
            ..Forwards::default()
        };
        let fw = &config.forwarding;
        let mut error = None;
        for (dir, proto, on, mode) in [
            (
                Direction::Inbound,
                Proto::Tcp,
                config.protocols.tcp,
                &fw.tcp_in,
            ),
            (
                Direction::Inbound,
                Proto::Udp,
                config.protocols.udp,
                &fw.udp_in,
            ),
            (
                Direction::Outbound,
                Proto::Tcp,
                config.protocols.tcp,
                &fw.tcp_out,
            ),
            (
                Direction::Outbound,
                Proto::Udp,
                config.protocols.udp,
                &fw.udp_out,
            ),
        ] {
            if !on {
                continue;
            }
            if *mode == ForwardMode::Auto {
                f.auto[dir_index(dir)][proto_index(proto)] = true;
                continue;
            }
            let table = match dir {
                Direction::Inbound => &mut f.inbound,
                Direction::Outbound => &mut f.outbound,
            };
            for rule in rules_of_mode(mode, proto, ephemeral.clone()) {
                if let Err(e) = table.push_unchecked(rule) {
                    error.get_or_insert(e);
                    break;
                }
            }
        }
        f.targets = targets_of(&f.inbound);
        (f, error)
    }

    /// The rules of `direction`, in order.
    pub fn table(&self, direction: Direction) -> &ForwardTable {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// Whether `auto` forwarding is on for `proto` in `direction`.
    pub fn auto(&self, direction: Direction, proto: Proto) -> bool {
        self.auto[dir_index(direction)][proto_index(proto)]
    }

    /// Where an inbound `proto` connection or datagram to `local`:`port` goes: the target
    /// address (`None`: the guest's own) and port. Explicit rules first (the last matching
    /// one), then `auto`, whose listeners are on the ports bound in the guest, same port.
    pub fn map_in(&self, proto: Proto, local: IpAddr, port: u16) -> Option<(Option<IpAddr>, u16)> {
        let local = local.to_canonical();
        if let Some(to) = self.inbound.map(proto, local, port) {
            return Some(to);
        }
        self.auto(Direction::Inbound, proto)
            .then_some((None, port))
            .filter(|&(_, p)| p != 0)
    }

    /// Whether `addr` is the target of an inbound rule (a peer the namespace routes to, not
    /// the guest itself).
    #[inline]
    pub fn is_target(&self, addr: IpAddr) -> bool {
        !self.targets.is_empty() && self.targets.contains(&addr)
    }

    /// Whether some explicit rule of `direction` names `proto` port `port` (on any address):
    /// `auto` leaves such ports alone.
    pub fn claims(&self, direction: Direction, proto: Proto, port: u16) -> bool {
        self.table(direction)
            .rules()
            .iter()
            .any(|r| r.proto == proto && r.first <= port && port <= r.last)
    }

    /// The sockets a table listens with now, with whether each is required: see
    /// [`ListenerDiff`]. For the driver's start-up, the diff from nothing.
    pub fn listeners(&self, direction: Direction) -> ListenerDiff {
        let open = self
            .sockets_of(direction, self.table(direction))
            .into_iter()
            .collect();
        ListenerDiff {
            open,
            close: Vec::new(),
        }
    }

    /// Checks `table` as the new table of `direction` and works out what the driver must open
    /// and close for it. Nothing changes until [`Forwards::commit`].
    pub fn plan(
        &self,
        config: &Config,
        direction: Direction,
        table: ForwardTable,
    ) -> Result<ForwardChange, ForwardError> {
        for rule in table.rules() {
            self.check(config, direction, rule)?;
        }
        let old = self.sockets_of(direction, self.table(direction));
        let new = self.sockets_of(direction, &table);
        let close = old
            .keys()
            .filter(|s| !new.contains_key(*s))
            .cloned()
            .collect();
        let open = new
            .into_iter()
            .filter(|(s, _)| !old.contains_key(s))
            .collect();
        Ok(ForwardChange {
            direction,
            table,
            diff: ListenerDiff { open, close },
        })
    }

    /// Makes a planned table the one in use: connections and datagrams from now on are looked
    /// up in it; flows already open carry on as they were.
    pub fn commit(&mut self, change: ForwardChange) {
        match change.direction {
            Direction::Inbound => {
                self.inbound = change.table;
                self.targets = targets_of(&self.inbound);
            }
            Direction::Outbound => self.outbound = change.table,
        }
    }

    /// Whether `rule` can be used in `direction` under `config`.
    fn check(
        &self,
        config: &Config,
        direction: Direction,
        rule: &ForwardRule,
    ) -> Result<(), ForwardError> {
        rule.check()?;
        if rule.scan {
            return Err(ForwardError::ScanAtRunTime(rule.to_string()));
        }
        match rule.proto {
            Proto::Tcp if !config.protocols.tcp => {
                return Err(ForwardError::ProtocolDisabled("TCP"))
            }
            Proto::Udp if !config.protocols.udp => {
                return Err(ForwardError::ProtocolDisabled("UDP"))
            }
            _ => {}
        }
        let addrs = [rule.listen.bind_addr(), rule.target];
        for a in addrs.into_iter().flatten().map(|a| a.to_canonical()) {
            if a.is_ipv4() && config.ip4.is_none() {
                return Err(ForwardError::FamilyDisabled("IPv4"));
            }
            if a.is_ipv6() && config.ip6.is_none() {
                return Err(ForwardError::FamilyDisabled("IPv6"));
            }
        }
        if direction == Direction::Outbound {
            if config.mode != crate::config::Mode::Pasta {
                return Err(ForwardError::NoOutbound(rule.to_string()));
            }
            if rule.target.is_some() {
                return Err(ForwardError::OutboundTarget(rule.to_string()));
            }
            if rule.iface.is_some() {
                return Err(ForwardError::OutboundIface(rule.to_string()));
            }
        }
        Ok(())
    }

    /// The sockets `table` listens with in `direction`, each with whether it is required (some
    /// rule needing it isn't best-effort).
    fn sockets_of(
        &self,
        direction: Direction,
        table: &ForwardTable,
    ) -> BTreeMap<ListenSocket, bool> {
        let mut out: BTreeMap<ListenSocket, bool> = BTreeMap::new();
        for rule in table.rules().iter().filter(|r| !r.scan) {
            let addrs: Vec<IpAddr> = match (rule.listen, direction) {
                (Listen::Addr(a), _) => vec![a.to_canonical()],
                (Listen::DualStackAny, Direction::Inbound) => self.families(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ),
                (Listen::DualStackAny, Direction::Outbound) => self.families(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ),
            };
            for port in rule.first..=rule.last {
                let to = rule.to.wrapping_add(port - rule.first);
                for &a in &addrs {
                    let socket = ListenSocket {
                        proto: rule.proto.into(),
                        addr: SocketAddr::new(a, port),
                        iface: rule.iface.clone(),
                        to: (direction == Direction::Outbound).then_some(to),
                    };
                    *out.entry(socket).or_default() |= !rule.weak;
                }
            }
        }
        out
    }

    /// `v4` and `v6`, each if its family is in use.
    fn families(&self, v4: IpAddr, v6: IpAddr) -> Vec<IpAddr> {
        [self.v4.then_some(v4), self.v6.then_some(v6)]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The distinct target addresses of `table`'s rules.
fn targets_of(table: &ForwardTable) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for t in table.rules().iter().filter_map(|r| r.target) {
        let t = t.to_canonical();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The rules a command-line mode makes for `proto`: each spec's rules ([`PortSpec::to_rules`]:
/// one per run of consecutive ports leading to consecutive ports), specs in order, so that a
/// later spec wins where they overlap. `all` is best-effort (`weak`) rules around the
/// `ephemeral` ports; `none`, `auto` and no option make none.
pub fn rules_of_mode(
    mode: &ForwardMode,
    proto: Proto,
    ephemeral: RangeInclusive<u16>,
) -> Vec<ForwardRule> {
    match mode {
        ForwardMode::Unset | ForwardMode::None | ForwardMode::Auto => Vec::new(),
        ForwardMode::All => PortSpec::All.to_rules(proto, ephemeral),
        ForwardMode::Ports(list) => list
            .iter()
            .flat_map(|ranges| PortSpec::Ports(ranges.clone()).to_rules(proto, ephemeral.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
