//! A simulated world: our engine and one guest on a link, under a virtual clock.
//!
//! [`World::step`] moves every frame in flight and runs whatever is due; when nothing is in
//! flight it jumps the clock to the next deadline of either side. Everything is deterministic:
//! the same configuration and seed give the same [`Transcript`], byte for byte.

use std::time::Duration;

use sans_io::config::Config;
use sans_io::engine::Engine;
use sans_io::flow::NoSockets;
use sans_io::time::Instant;
use sans_io::wire::FrameQueue;

use crate::guest::SmolGuest;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    GuestToEngine,
    EngineToGuest,
}

/// Every frame that crossed the link, with the time it did.
pub type Transcript = Vec<(Instant, Direction, Vec<u8>)>;

pub struct World {
    pub now: Instant,
    pub engine: Engine,
    pub guest: SmolGuest,
    pub transcript: Transcript,
    out: FrameQueue,
}

impl World {
    pub fn new(config: Config, seed: u64, guest_mac: [u8; 6]) -> World {
        let now = Instant::from_millis(1);
        World {
            now,
            engine: Engine::new(config, seed, now),
            guest: SmolGuest::new(guest_mac, now),
            transcript: Vec::new(),
            out: FrameQueue::new(),
        }
    }

    /// Runs the guest, carries its frames to the engine, runs what is due in the engine and
    /// carries the answers back. Returns whether any frame moved.
    pub fn step(&mut self) -> bool {
        self.guest.poll(self.now);
        let mut moved = false;
        while let Some(frame) = self.guest.device.tx.pop_front() {
            moved = true;
            self.engine
                .handle_frame(self.now, &frame, &mut NoSockets, &mut self.out);
            self.transcript
                .push((self.now, Direction::GuestToEngine, frame));
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine
                .handle_timeout(self.now, &mut NoSockets, &mut self.out);
        }
        for frame in self.out.iter() {
            moved = true;
            self.transcript
                .push((self.now, Direction::EngineToGuest, frame.to_vec()));
            self.guest.device.rx.push_back(frame.to_vec());
        }
        self.out.clear();
        moved
    }

    /// Steps until `done` holds or `limit` of virtual time has passed; returns whether `done`
    /// held. Idle periods jump straight to the next deadline.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        // A bound on steps at one instant: a livelock is a bug to report, not to spin on.
        let mut steps_here = 0;
        while self.now <= end {
            if done(self) {
                return true;
            }
            if self.step() {
                steps_here += 1;
                assert!(steps_here < 10_000, "livelock at {:?}", self.now);
                continue;
            }
            steps_here = 0;
            let guest_next = self.guest.poll_at(self.now);
            let next = [guest_next, self.engine.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end + Duration::from_nanos(1));
            // Time moves forward by at least a millisecond per idle step.
            self.now = next.max(self.now + Duration::from_millis(1));
        }
        done(self)
    }
}
