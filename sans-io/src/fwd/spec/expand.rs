//! What a port list forwards: the `(from, to)` pairs, with exclusions and overlaps resolved;
//! and the forwarding rules a spec stands for, as the C original and `pesto` make them.

use std::ops::RangeInclusive;

use super::{PortItem, PortRanges, PortSpec};
use crate::flow::Proto;
use crate::fwd::rule::{ForwardRule, Listen};

impl PortSpec {
    /// The rules this spec adds for `proto`, as the C original makes them (`fwd_rule_parse`):
    /// each forwarded range becomes rules for its runs between excluded ports, in the order
    /// written (overlaps are left for the table to call conflicts); a list without forwarded
    /// ports (`auto`, `all`, `ADDR/all`, exclusions only) stands for every port but the
    /// `ephemeral` ones and the excluded ones, best effort. An `auto` anywhere makes every
    /// rule of the spec apply only while its port is bound on the other side; `all:TADDR`
    /// gives the every-port rules a target address.
    pub fn to_rules(&self, proto: Proto, ephemeral: RangeInclusive<u16>) -> Vec<ForwardRule> {
        let base = ForwardRule::ports(proto, 1, 1);
        let every_port = |rule: &ForwardRule, excluded: &[bool]| {
            let skip = |p: u16| excluded[usize::from(p)] || ephemeral.contains(&p);
            runs(1, u16::MAX, skip)
                .map(|(first, last)| ForwardRule {
                    first,
                    last,
                    to: first,
                    weak: true,
                    ..rule.clone()
                })
                .collect()
        };
        let none = vec![false; 1 << 16];
        match self {
            PortSpec::None => Vec::new(),
            PortSpec::All => every_port(&base, &none),
            PortSpec::Auto => every_port(&ForwardRule { scan: true, ..base }, &none),
            PortSpec::Ports(ranges) => {
                let mut rule = ForwardRule {
                    listen: ranges.bind.map_or(Listen::DualStackAny, Listen::Addr),
                    iface: ranges.iface.clone(),
                    ..base
                };
                let mut excluded = vec![false; 1 << 16];
                // The target of the ports `all` stands for: the last `all:TADDR` says.
                let mut all_target = None;
                for item in &ranges.items {
                    match item {
                        PortItem::Exclude(r) => {
                            excluded[usize::from(r.first)..=usize::from(r.last)].fill(true)
                        }
                        PortItem::Auto => rule.scan = true,
                        PortItem::All(target) => all_target = *target,
                        PortItem::Forward(_) => {}
                    }
                }
                if !ranges.has_forwards() {
                    rule.target = all_target;
                    return every_port(&rule, &excluded);
                }
                let mut out = Vec::new();
                for item in &ranges.items {
                    let PortItem::Forward(map) = item else {
                        continue;
                    };
                    let skip = |p: u16| excluded[usize::from(p)];
                    for (first, last) in runs(map.from.first, map.from.last, skip) {
                        let Some(to) = map.target(first) else {
                            continue;
                        };
                        out.push(ForwardRule {
                            first,
                            last,
                            to,
                            target: map.to_addr,
                            ..rule.clone()
                        });
                    }
                }
                out
            }
        }
    }
}

/// The maximal runs of ports in `first..=last` that `skip` does not skip.
fn runs(first: u16, last: u16, skip: impl Fn(u16) -> bool) -> impl Iterator<Item = (u16, u16)> {
    let mut next = u32::from(first);
    let last = u32::from(last);
    std::iter::from_fn(move || {
        while next <= last && skip(next as u16) {
            next += 1;
        }
        if next > last {
            return None;
        }
        let start = next;
        while next <= last && !skip(next as u16) {
            next += 1;
        }
        Some((start as u16, (next - 1) as u16))
    })
}

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
                .prop_map(|(from, to_first)| PortItem::Forward(PortMap { from, to_first, to_addr: None })),
            1 => arb_small_range().prop_map(PortItem::Exclude),
            1 => arb_small_range().prop_map(|r| PortItem::Forward(PortMap::identity(r))),
        ];
        proptest::collection::vec(item, 0..8).prop_map(|items| PortRanges {
            bind: None,
            iface: None,
            items,
        })
    }

    fn rules(spec: &str) -> Vec<String> {
        let spec: PortSpec = spec.parse().unwrap();
        spec.to_rules(Proto::Tcp, EPHEMERAL)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn specs_become_rules_as_in_the_original() {
        assert_eq!(rules("none"), Vec::<String>::new());
        assert_eq!(rules("8080:80"), ["TCP *:8080  =>  80"]);
        assert_eq!(
            rules("0.0.0.0/8080:10.88.0.2/80"),
            ["TCP 0.0.0.0:8080  =>  10.88.0.2:80"]
        );
        assert_eq!(
            rules("[::]/8000-8004:fd00::2/80-84"),
            ["TCP [::]:8000-8004  =>  [fd00::2]:80-84"]
        );
        // Exclusions split the ranges; items stay separate rules, in order.
        assert_eq!(
            rules("%eth0/20-30,~25,~27-28,22"),
            [
                "TCP *%eth0:20-24  =>  20-24",
                "TCP *%eth0:26  =>  26",
                "TCP *%eth0:29-30  =>  29-30",
                "TCP *%eth0:22  =>  22",
            ]
        );
        assert_eq!(
            rules("all"),
            [
                "TCP *:1-32767  =>  1-32767 (best effort)",
                "TCP *:61000-65535  =>  61000-65535 (best effort)"
            ]
        );
        assert_eq!(
            rules("auto"),
            [
                "TCP *:1-32767  =>  1-32767 (best effort) (auto-scan)",
                "TCP *:61000-65535  =>  61000-65535 (best effort) (auto-scan)"
            ]
        );
        assert_eq!(
            rules("::1/~2-32767"),
            [
                "TCP [::1]:1  =>  1 (best effort)",
                "TCP [::1]:61000-65535  =>  61000-65535 (best effort)"
            ]
        );
        assert_eq!(rules("~1-65535"), Vec::<String>::new());
        // The C original's list keywords.
        assert_eq!(
            rules("8000-8010,auto"),
            ["TCP *:8000-8010  =>  8000-8010 (auto-scan)"]
        );
        assert_eq!(
            rules("192.0.2.2/auto,~1-32767"),
            ["TCP 192.0.2.2:61000-65535  =>  61000-65535 (best effort) (auto-scan)"]
        );
        assert_eq!(
            rules("0.0.0.0/all:10.88.0.2,~1-60999"),
            ["TCP 0.0.0.0:61000-65535  =>  10.88.0.2:61000-65535 (best effort)"]
        );
        // `all` beside forwarded ports stands for nothing, as in the original.
        assert_eq!(rules("127.0.0.1/all,22"), ["TCP 127.0.0.1:22  =>  22"]);
    }

    proptest! {
        /// The rules forward what `expand` says, when no item overlaps another.
        #[test]
        fn rules_cover_what_expand_forwards(mut r in arb_small_ranges()) {
            // Drop the forwards that overlap earlier ones (the original makes them separate,
            // conflicting rules; expand lets the later win).
            let mut seen = std::collections::BTreeSet::new();
            r.items.retain(|i| match i {
                PortItem::Forward(m) => {
                    let ports = m.from.first..=m.from.last;
                    let fresh = ports.clone().all(|p| !seen.contains(&p));
                    if fresh {
                        seen.extend(ports);
                    }
                    fresh
                }
                _ => true,
            });
            // Parsed lists are never empty.
            prop_assume!(!r.items.is_empty());
            let expanded = r.expand(EPHEMERAL);
            let rules = PortSpec::Ports(r).to_rules(Proto::Udp, EPHEMERAL);
            let mut from_rules: Vec<(u16, u16)> = rules
                .iter()
                .flat_map(|rule| (rule.first..=rule.last).map(move |p| (p, rule.to + (p - rule.first))))
                .collect();
            from_rules.sort_unstable();
            prop_assert_eq!(from_rules, expanded);
            prop_assert!(rules.iter().all(|rule| rule.check().is_ok()));
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
