//! What a port list forwards: the `(from, to)` pairs, with exclusions and overlaps resolved.

use std::ops::RangeInclusive;

use super::{PortItem, PortRanges};

impl PortRanges {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{PortMap, PortRange};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

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
        fn expand_matches_model(r in arb_small_ranges(), lo in 1u16..100, len in 0u16..100) {
            let ephemeral = lo..=lo.saturating_add(len);
            let got = r.expand(ephemeral.clone());
            prop_assert_eq!(&got, &expand_model(&r, ephemeral));
            prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(got.iter().all(|&(from, to)| from != 0 && to != 0 && !r.excludes(from)));
        }
    }
}
