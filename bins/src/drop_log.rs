//! Saying what was dropped: one log line per kind of drop (a full flow table, running out of
//! descriptors), at most once per [`DROP_LOG_INTERVAL`], with how many since the last line.
//!
//! The engine and the host sockets only count; the main loop hands the counters to
//! [`DropLog::observe`] after each wake-up and logs the lines it returns. A kind's first drop
//! is said at once; drops within the interval after a line are held back and said together
//! when it ends ([`DropLog::deadline`] tells the loop when that is).

use std::time::Duration;

use os_shim::sockets::Sockets;
use sans_io::engine::Engine;
use sans_io::time::Instant;

/// At most one line per kind of drop this often.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// A kind of drop: what the line says, and where its counter is.
pub struct DropKind {
    /// What happened, with `{}` where the count goes ("TCP flow table full: {} connections
    /// refused"); without one, the count is added at the end.
    pub what: &'static str,
    pub count: fn(&Engine, &Sockets) -> u64,
}

/// The drops worth a line on the log (a warning).
pub const KINDS: &[DropKind; 6] = &[
    DropKind {
        what: "TCP flow table full: {} connections refused",
        count: |e, _| e.counters().tcp.table_full,
    },
    DropKind {
        what: "UDP flow table full: {} datagrams of new flows dropped",
        count: |e, _| e.counters().udp.table_full,
    },
    DropKind {
        what: "ICMP flow table full: {} echo requests of new flows dropped",
        count: |e, _| e.counters().icmp.table_full,
    },
    DropKind {
        what: "out of file descriptors {} times (see ulimit -n): new connections wait or are \
               refused",
        count: |_, s| s.out_of_descriptors(),
    },
    DropKind {
        what: "loopback relay table full: {} connections refused",
        count: |_, s| s.bypass().map_or(0, |b| b.splicer.stats().table_full),
    },
    DropKind {
        what: "loopback datagram relay table full: {} datagrams of new senders dropped",
        count: |_, s| s.bypass().map_or(0, |b| b.dgram_relay.stats().table_full),
    },
];

/// Room made in a full table by closing quiet flows: the new flows got in, nothing was
/// dropped, but a table that keeps filling up is worth knowing of (with `--debug`).
pub const ROOM_MADE: &[DropKind; 3] = &[
    DropKind {
        what: "UDP flows: closed {} quiet ones to make room for new ones",
        count: |e, _| e.counters().udp.evicted,
    },
    DropKind {
        what: "echo flows: closed {} quiet ones to make room for new ones",
        count: |e, _| e.counters().icmp.evicted,
    },
    DropKind {
        what: "loopback datagram relay: closed {} quiet flows to make room for new ones",
        count: |_, s| {
            s.bypass()
                .map_or(0, |b| b.dgram_relay.stats().flows_evicted)
        },
    },
];

/// The counters of every kind in `kinds`, in order (no allocation: it runs every wake-up).
pub fn sample<const N: usize>(
    kinds: &[DropKind; N],
    engine: &Engine,
    sockets: &Sockets,
) -> [u64; N] {
    std::array::from_fn(|i| (kinds[i].count)(engine, sockets))
}

#[derive(Debug, Clone, Default)]
struct KindState {
    /// The counter when last looked at.
    seen: u64,
    /// Counted since the last line, not said yet.
    held: u64,
    /// When the last line was said.
    said_at: Option<Instant>,
}

/// Rate-limited drop lines, see the module documentation.
#[derive(Debug, Clone)]
pub struct DropLog {
    whats: Vec<&'static str>,
    kinds: Vec<KindState>,
    interval: Duration,
}

impl DropLog {
    /// For the kinds named by `whats`, whose counters start at `initial` (drops before the
    /// loop, if any, are not news).
    pub fn new(whats: Vec<&'static str>, initial: &[u64], interval: Duration) -> DropLog {
        let kinds = whats
            .iter()
            .enumerate()
            .map(|(i, _)| KindState {
                seen: initial.get(i).copied().unwrap_or(0),
                ..KindState::default()
            })
            .collect();
        DropLog {
            whats,
            kinds,
            interval,
        }
    }

    /// For `kinds` ([`KINDS`], [`ROOM_MADE`]), starting from what `engine` and `sockets`
    /// counted so far.
    pub fn for_kinds<const N: usize>(
        kinds: &[DropKind; N],
        engine: &Engine,
        sockets: &Sockets,
    ) -> DropLog {
        DropLog::new(
            kinds.iter().map(|k| k.what).collect(),
            &sample(kinds, engine, sockets),
            DROP_LOG_INTERVAL,
        )
    }

    /// Takes the counters at `now` (one per kind, in order); returns the lines due.
    pub fn observe(&mut self, now: Instant, counts: &[u64]) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, (k, &count)) in self.kinds.iter_mut().zip(counts).enumerate() {
            // A counter never goes back; if one did, start again from it.
            k.held += count.saturating_sub(k.seen);
            k.seen = count;
            if k.held == 0 || k.said_at.is_some_and(|t| now < t + self.interval) {
                continue;
            }
            let since = if k.said_at.is_some() {
                ", since the last report"
            } else {
                ""
            };
            let what = self.whats[i];
            let line = if what.contains("{}") {
                what.replacen("{}", &k.held.to_string(), 1)
            } else {
                format!("{what}: {}", k.held)
            };
            lines.push(format!("{line}{since}"));
            k.held = 0;
            k.said_at = Some(now);
        }
        lines
    }

    /// When held-back drops are due to be said, if any are.
    pub fn deadline(&self) -> Option<Instant> {
        self.kinds
            .iter()
            .filter(|k| k.held > 0)
            .filter_map(|k| k.said_at.map(|t| t + self.interval))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> Instant {
        Instant::from_nanos((secs * 1e9) as u64)
    }

    fn log() -> DropLog {
        DropLog::new(vec!["A full", "B full"], &[0, 3], Duration::from_secs(5))
    }

    #[test]
    fn the_first_drop_is_said_at_once_the_rest_once_per_interval() {
        let mut d = log();
        assert!(d.observe(at(1.0), &[0, 3]).is_empty(), "nothing new");
        assert_eq!(d.deadline(), None);
        assert_eq!(d.observe(at(2.0), &[1, 3]), ["A full: 1"]);
        // Within the interval: held back, and the loop is told when to come back.
        assert!(d.observe(at(3.0), &[40, 3]).is_empty());
        assert!(d.observe(at(6.9), &[100, 3]).is_empty());
        assert_eq!(d.deadline(), Some(at(7.0)));
        assert_eq!(
            d.observe(at(7.0), &[100, 3]),
            ["A full: 99, since the last report"]
        );
        assert_eq!(d.deadline(), None);
        // Quiet for a while, then one more: said at once again.
        assert_eq!(
            d.observe(at(20.0), &[101, 3]),
            ["A full: 1, since the last report"]
        );
    }

    #[test]
    fn kinds_are_limited_each_on_its_own() {
        let mut d = log();
        assert_eq!(d.observe(at(1.0), &[1, 3]), ["A full: 1"]);
        // B's counter started at 3: only what came after is news.
        assert_eq!(d.observe(at(2.0), &[2, 5]), ["B full: 2"]);
        assert_eq!(d.deadline(), Some(at(6.0)));
        assert_eq!(
            d.observe(at(6.0), &[2, 9]),
            ["A full: 1, since the last report"]
        );
        assert_eq!(
            d.observe(at(7.0), &[2, 9]),
            ["B full: 4, since the last report"]
        );
    }

    #[test]
    fn a_storm_gives_a_bounded_number_of_lines() {
        let mut d = log();
        let mut lines = 0;
        for ms in 0..60_000u64 {
            lines += d.observe(at(ms as f64 / 1000.0), &[ms, 3 + ms]).len();
        }
        // One minute, two kinds, a line each per 5 s at most (plus the first).
        assert!(lines <= 2 * 13, "{lines} lines");
        assert!(lines >= 2 * 12, "{lines} lines");
    }

    #[test]
    fn the_count_goes_where_the_text_says() {
        let mut d = DropLog::new(vec!["full: {} refused"], &[0], Duration::from_secs(5));
        assert_eq!(d.observe(at(1.0), &[3]), ["full: 3 refused"]);
        assert_eq!(
            d.observe(at(9.0), &[5]),
            ["full: 2 refused, since the last report"]
        );
        // Every kind we log has a place for its count.
        assert!(KINDS.iter().all(|k| k.what.contains("{}")));
    }

    #[test]
    fn fewer_counters_than_kinds_is_harmless() {
        let mut d = log();
        assert_eq!(d.observe(at(1.0), &[2]), ["A full: 2"]);
        assert!(d.observe(at(2.0), &[]).is_empty());
    }
}
