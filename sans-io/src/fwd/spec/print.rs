//! The canonical printed form, which parses back to the same value.

use std::fmt;
use std::net::IpAddr;

use super::{PortItem, PortMap, PortRange, PortRanges, PortSpec};

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
        match self.to_addr {
            // Bracketed, so that `P:[ADDR]/TP` can't read as a listening prefix.
            Some(IpAddr::V6(a)) => write!(f, ":[{a}]")?,
            Some(a) => write!(f, ":{a}")?,
            None if self.to_first == self.from.first => return Ok(()),
            None => {}
        }
        let sep = if self.to_addr.is_some() { "/" } else { ":" };
        if self.to_first == self.from.first {
            // `P:TADDR`: the same ports.
            return Ok(());
        }
        if self.from.first == self.from.last {
            return write!(f, "{sep}{}", self.to_first);
        }
        // Computed wide so that an out-of-range value built by hand prints without panicking
        // (and fails to parse back).
        let span = i32::from(self.from.last) - i32::from(self.from.first);
        write!(
            f,
            "{sep}{}-{}",
            self.to_first,
            i32::from(self.to_first) + span
        )
    }
}

impl fmt::Display for PortItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortItem::Forward(map) => write!(f, "{map}"),
            PortItem::Exclude(range) => write!(f, "~{range}"),
            PortItem::Auto => f.write_str("auto"),
            PortItem::All(None) => f.write_str("all"),
            PortItem::All(Some(IpAddr::V6(a))) => write!(f, "all:[{a}]"),
            PortItem::All(Some(a)) => write!(f, "all:{a}"),
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
        // A lone keyword item would read as the keyword spec: `*/` keeps it a list.
        let lone_keyword = matches!(self.items[..], [PortItem::Auto | PortItem::All(None)]);
        if self.bind.is_some() || self.iface.is_some() {
            f.write_str("/")?;
        } else if lone_keyword {
            f.write_str("*/")?;
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
    use super::super::test_support::*;
    use super::super::PortRange;
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

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
    fn printing_out_of_range_values_does_not_panic() {
        let spec = ports(
            None,
            None,
            vec![PortItem::Forward(PortMap {
                from: range(1, 10),
                to_first: 65530,
                to_addr: None,
            })],
        );
        assert_eq!(spec.to_string(), "1-10:65530-65539");
        assert!(parse(&spec.to_string()).is_err());
        let reversed = ports(None, None, vec![fwd(10, 1, 20)]);
        assert_eq!(reversed.to_string(), "10-1:20-11");
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
            let to_addr = prop_oneof![
                3 => Just(None),
                1 => any::<IpAddr>().prop_map(Some),
            ];
            (to_first, to_addr).prop_map(move |(to_first, to_addr)| PortMap {
                from,
                to_first,
                to_addr,
            })
        })
    }

    fn arb_item() -> impl Strategy<Value = PortItem> {
        prop_oneof![
            6 => arb_map().prop_map(PortItem::Forward),
            2 => arb_range().prop_map(PortItem::Exclude),
            1 => Just(PortItem::Auto),
            1 => proptest::option::of(any::<IpAddr>()).prop_map(PortItem::All),
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

    proptest! {
        #[test]
        fn display_parse_round_trip(spec in any::<PortSpec>()) {
            let printed = spec.to_string();
            prop_assert_eq!(printed.parse::<PortSpec>(), Ok(spec.clone()), "printed {:?}", printed);
            // And printing is canonical: a second round prints the same text.
            prop_assert_eq!(spec.to_string(), printed);
        }
    }
}
