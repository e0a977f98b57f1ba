//! Port forwarding: the `-t/-u/-T/-U` grammar ([`spec`]) and how repeated options combine
//! ([`ForwardMode`]). Address translation rules join here with the data path.

pub mod spec;

pub use spec::{PortItem, PortMap, PortRange, PortRanges, PortSpec, SpecError};

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
