//! Port forwarding: the `-t/-u/-T/-U` grammar ([`spec`]) and how repeated options combine
//! ([`ForwardMode`]). Address translation rules join here with the data path.

pub mod apply;
pub mod forwards;
pub mod nat;
pub mod procnet;
pub mod rule;
pub mod spec;

use std::net::IpAddr;
use std::ops::RangeInclusive;

pub use spec::{PortItem, PortMap, PortRange, PortRanges, PortSpec, SpecError};

/// One forwarded port: where to listen and which guest port it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Forward {
    pub bind: Option<IpAddr>,
    pub iface: Option<String>,
    pub port: u16,
    pub to: u16,
}

/// The ports `auto` forwarding listens on, given the ports `bound` on the other side: all of
/// them but the host's `ephemeral` ports (which its own outgoing connections use).
pub fn auto_ports(
    bound: &procnet::PortSet,
    ephemeral: RangeInclusive<u16>,
) -> impl Iterator<Item = u16> + '_ {
    bound
        .iter()
        .filter(move |p| *p != 0 && !ephemeral.contains(p))
}

/// The forwarding for one protocol and direction, after every option naming it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ForwardMode {
    /// No option given: the mode's default applies (see [`ForwardMode::or_default`]).
    #[default]
    Unset,
    None,
    Auto,
    All,
    /// Every explicit spec given, in order.
    Ports(Vec<PortRanges>),
}

/// Why a spec cannot be added to what earlier options said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeConflict {
    /// A keyword after anything else (the original's wording, which Podman users know).
    #[error("port forwarding mode '{0}' conflicts with previous mode")]
    Keyword(&'static str),
    /// Explicit ports after `none`, `auto` or `all`.
    #[error("specific ports cannot be given together with '{0}'")]
    PortsAfterKeyword(&'static str),
}

impl ForwardMode {
    /// Adds one more option's spec. Keywords must stand alone; explicit specs accumulate.
    pub fn add(&mut self, spec: PortSpec) -> Result<(), ModeConflict> {
        let keyword = match &spec {
            PortSpec::None => Some(("none", ForwardMode::None)),
            PortSpec::Auto => Some(("auto", ForwardMode::Auto)),
            PortSpec::All => Some(("all", ForwardMode::All)),
            PortSpec::Ports(_) => None,
        };
        match (keyword, &mut *self) {
            (Some((_, mode)), ForwardMode::Unset) => *self = mode,
            (Some((word, _)), _) => return Err(ModeConflict::Keyword(word)),
            (None, ForwardMode::Unset) => {
                let PortSpec::Ports(ranges) = spec else {
                    unreachable!()
                };
                *self = ForwardMode::Ports(vec![ranges]);
            }
            (None, ForwardMode::Ports(list)) => {
                let PortSpec::Ports(ranges) = spec else {
                    unreachable!()
                };
                list.push(ranges);
            }
            (None, other) => return Err(ModeConflict::PortsAfterKeyword(other.keyword())),
        }
        Ok(())
    }

    /// The keyword naming this mode, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            ForwardMode::Unset => "unset",
            ForwardMode::None => "none",
            ForwardMode::Auto => "auto",
            ForwardMode::All => "all",
            ForwardMode::Ports(_) => "ports",
        }
    }

    /// The ports explicitly forwarded (`Ports`, and `All` as every non-ephemeral port); `auto`
    /// is decided at run time from the ports bound on the other side, and gives none here.
    /// A port named by several specs goes where the last one says.
    pub fn forwards(&self, ephemeral: RangeInclusive<u16>) -> Vec<Forward> {
        match self {
            ForwardMode::Unset | ForwardMode::None | ForwardMode::Auto => Vec::new(),
            ForwardMode::All => (1..=u16::MAX)
                .filter(|p| !ephemeral.contains(p))
                .map(|port| Forward {
                    bind: None,
                    iface: None,
                    port,
                    to: port,
                })
                .collect(),
            ForwardMode::Ports(list) => {
                let mut out: Vec<Forward> = Vec::new();
                for ranges in list {
                    for (port, to) in ranges.expand(ephemeral.clone()) {
                        let f = Forward {
                            bind: ranges.bind,
                            iface: ranges.iface.clone(),
                            port,
                            to,
                        };
                        match out
                            .iter_mut()
                            .find(|o| o.port == port && o.bind == f.bind && o.iface == f.iface)
                        {
                            Some(existing) => existing.to = to,
                            None => out.push(f),
                        }
                    }
                }
                out
            }
        }
    }

    /// The guest port a connection to local `port` (at `local`) goes to, if forwarded.
    pub fn target(&self, local: IpAddr, port: u16, ephemeral: RangeInclusive<u16>) -> Option<u16> {
        match self {
            ForwardMode::All => (!ephemeral.contains(&port)).then_some(port),
            ForwardMode::Ports(list) => list.iter().rev().find_map(|ranges| {
                if ranges
                    .bind
                    .is_some_and(|b| b != local && !b.is_unspecified())
                {
                    return None;
                }
                ranges
                    .expand(ephemeral.clone())
                    .into_iter()
                    .find(|&(from, _)| from == port)
                    .map(|(_, to)| to)
            }),
            _ => None,
        }
    }

    /// The same ports forwarded each to itself: what UDP forwards when only TCP's ports were
    /// given (the man page's rule for `-u`). `None` for modes without explicit ports.
    pub fn untranslated(&self) -> Option<ForwardMode> {
        match self {
            ForwardMode::All => Some(ForwardMode::All),
            ForwardMode::Ports(list) => Some(ForwardMode::Ports(
                list.iter()
                    .map(|ranges| PortRanges {
                        items: ranges
                            .items
                            .iter()
                            .map(|item| match item {
                                PortItem::Forward(m) => {
                                    PortItem::Forward(PortMap::identity(m.from))
                                }
                                other => *other,
                            })
                            .collect(),
                        ..ranges.clone()
                    })
                    .collect(),
            )),
            _ => None,
        }
    }

    /// `self`, or `default` when no option was given.
    pub fn or_default(self, default: ForwardMode) -> ForwardMode {
        match self {
            ForwardMode::Unset => default,
            given => given,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    #[test]
    fn explicit_specs_accumulate() {
        let mut m = ForwardMode::Unset;
        m.add(ports("22")).unwrap();
        m.add(ports("8080-8081:80-81")).unwrap();
        let ForwardMode::Ports(list) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn none_after_ports_conflicts_with_the_original_wording() {
        let mut m = ForwardMode::Unset;
        m.add(ports("80,443")).unwrap();
        let err = m.add(PortSpec::None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port forwarding mode 'none' conflicts with previous mode"
        );
    }

    #[test]
    fn keywords_conflict_with_each_other() {
        let mut m = ForwardMode::Unset;
        m.add(PortSpec::Auto).unwrap();
        assert!(m.add(PortSpec::None).is_err());
        assert!(m.add(ports("22")).is_err());
        assert_eq!(m, ForwardMode::Auto);
    }

    #[test]
    fn forwards_and_targets() {
        let mut m = ForwardMode::Unset;
        m.add(ports("2222:22,8080-8081:80-81")).unwrap();
        m.add(ports("127.0.0.1/9000")).unwrap();
        let f = m.forwards(32768..=60999);
        let pairs: Vec<(u16, u16)> = f.iter().map(|f| (f.port, f.to)).collect();
        assert_eq!(pairs, [(2222, 22), (8080, 80), (8081, 81), (9000, 9000)]);
        assert_eq!(f[3].bind, Some("127.0.0.1".parse().unwrap()));
        let any: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(m.target(any, 8081, 32768..=60999), Some(81));
        assert_eq!(
            m.target(any, 9000, 32768..=60999),
            None,
            "bound to loopback only"
        );
        assert_eq!(
            m.target("127.0.0.1".parse().unwrap(), 9000, 32768..=60999),
            Some(9000)
        );
        assert_eq!(m.target(any, 1234, 32768..=60999), None);
        assert_eq!(ForwardMode::All.forwards(1024..=65535).len(), 1023);
        assert!(ForwardMode::Auto.forwards(1..=2).is_empty());
    }

    #[test]
    fn udp_follows_tcp_ports_without_translation() {
        let mut m = ForwardMode::Unset;
        m.add(ports("2222:22")).unwrap();
        m.add(ports("127.0.0.1/8080-8081:80-81,~8081")).unwrap();
        let u = m.untranslated().unwrap();
        let pairs: Vec<(u16, u16, Option<IpAddr>)> = u
            .forwards(32768..=60999)
            .iter()
            .map(|f| (f.port, f.to, f.bind))
            .collect();
        let lo = Some("127.0.0.1".parse().unwrap());
        assert_eq!(pairs, [(2222, 2222, None), (8080, 8080, lo)]);
        assert_eq!(ForwardMode::All.untranslated(), Some(ForwardMode::All));
        assert_eq!(ForwardMode::None.untranslated(), None);
        assert_eq!(ForwardMode::Auto.untranslated(), None);
    }

    #[test]
    fn auto_follows_bound_ports_except_ephemeral_ones() {
        let mut bound = procnet::PortSet::new();
        for p in [22, 8080, 40000, 61000] {
            bound.insert(p);
        }
        let ports: Vec<u16> = auto_ports(&bound, 32768..=60999).collect();
        assert_eq!(ports, [22, 8080, 61000]);
    }

    #[test]
    fn unset_takes_the_default() {
        assert_eq!(
            ForwardMode::Unset.or_default(ForwardMode::Auto),
            ForwardMode::Auto
        );
        assert_eq!(
            ForwardMode::None.or_default(ForwardMode::Auto),
            ForwardMode::None
        );
    }
}
