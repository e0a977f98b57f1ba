//! The link between the guest and the engine, with impairments: loss, delay and jitter,
//! reordering, duplication, truncation, each direction on its own, drawn from a generator
//! seeded by the world's seed.

use std::collections::BTreeMap;
use std::time::Duration;

use sans_io::time::Instant;

use crate::rng::SimRng;

/// What a link direction does to frames. The default is a perfect wire.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impair {
    /// Probability a frame is dropped.
    pub loss: f64,
    /// Probability a frame is held back by `reorder_by`, letting later frames overtake it.
    pub reorder: f64,
    pub reorder_by: Duration,
    /// Probability a frame arrives twice.
    pub duplicate: f64,
    /// Probability a frame loses a random part of its tail.
    pub truncate: f64,
    /// One-way delay, plus up to `jitter` more at random (frames stay in order unless
    /// reordered on purpose).
    pub delay: Duration,
    pub jitter: Duration,
}

impl Impair {
    /// A perfect wire with this delay.
    pub fn delay(d: Duration) -> Impair {
        Impair {
            delay: d,
            ..Impair::default()
        }
    }

    /// A lossy wire: `p` each of loss, reordering and duplication.
    pub fn lossy(p: f64) -> Impair {
        Impair {
            loss: p,
            reorder: p,
            duplicate: p,
            ..Impair::default()
        }
    }

    fn reorder_delay(&self) -> Duration {
        if self.reorder_by.is_zero() {
            Duration::from_micros(300)
        } else {
            self.reorder_by
        }
    }
}

/// What a link direction did, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipeStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub truncated: u64,
}

/// One direction of the link.
#[derive(Debug)]
pub struct Pipe {
    pub impair: Impair,
    /// Frames cut here are dropped, whatever the impairments (a guest that went away).
    pub cut: bool,
    pub stats: PipeStats,
    rng: SimRng,
    queue: BTreeMap<(Instant, u64), Vec<u8>>,
    seq: u64,
    /// When the last frame kept in order arrives: jitter doesn't reorder a FIFO link.
    last_at: Instant,
}

impl Pipe {
    pub fn new(seed: u64) -> Pipe {
        Pipe {
            impair: Impair::default(),
            cut: false,
            stats: PipeStats::default(),
            rng: SimRng::new(seed),
            queue: BTreeMap::new(),
            seq: 0,
            last_at: Instant::ZERO,
        }
    }

    fn push(&mut self, at: Instant, frame: Vec<u8>) {
        self.queue.insert((at, self.seq), frame);
        self.seq += 1;
    }

    /// A frame enters the link at `now`.
    pub fn send(&mut self, now: Instant, mut frame: Vec<u8>) {
        self.stats.sent += 1;
        let imp = self.impair;
        if self.cut || self.rng.chance(imp.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(imp.truncate) && !frame.is_empty() {
            let keep = self.rng.below(frame.len() as u64) as usize;
            frame.truncate(keep);
            self.stats.truncated += 1;
        }
        let mut delay = imp.delay;
        if !imp.jitter.is_zero() {
            delay += Duration::from_nanos(self.rng.below(imp.jitter.as_nanos() as u64 + 1));
        }
        let mut at = now + delay;
        if self.rng.chance(imp.reorder) {
            // Held back: later frames overtake it.
            at = at + imp.reorder_delay();
            self.stats.reordered += 1;
        } else {
            at = at.max(self.last_at);
            self.last_at = at;
        }
        if self.rng.chance(imp.duplicate) {
            let extra = Duration::from_nanos(self.rng.below(imp.reorder_delay().as_nanos() as u64));
            self.push(at + extra, frame.clone());
            self.stats.duplicated += 1;
        }
        self.push(at, frame);
    }

    /// Frames due at `now`, in arrival order.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        self.stats.delivered += out.len() as u64;
        out
    }

    /// When the next frame arrives.
    pub fn next_at(&self) -> Option<Instant> {
        self.queue.keys().next().map(|&(t, _)| t)
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_wire_delivers_in_order_after_the_delay() {
        let mut p = Pipe::new(1);
        p.impair = Impair::delay(Duration::from_millis(1));
        let t = Instant::from_millis(10);
        p.send(t, vec![1]);
        p.send(t, vec![2]);
        assert!(p.due(t).is_empty());
        assert_eq!(p.next_at(), Some(Instant::from_millis(11)));
        assert_eq!(p.due(Instant::from_millis(11)), [vec![1], vec![2]]);
    }

    #[test]
    fn impairments_happen_at_their_rates() {
        let mut p = Pipe::new(9);
        p.impair = Impair {
            loss: 0.1,
            duplicate: 0.1,
            truncate: 0.1,
            reorder: 0.1,
            ..Impair::default()
        };
        for i in 0..10_000u32 {
            p.send(Instant::ZERO, i.to_be_bytes().to_vec());
        }
        let s = p.stats.clone();
        for n in [s.lost, s.duplicated, s.truncated, s.reordered] {
            assert!((700..1300).contains(&n), "{s:?}");
        }
        let got = p.due(Instant::from_millis(1));
        assert_eq!(got.len() as u64, 10_000 - s.lost + s.duplicated);
    }
}
