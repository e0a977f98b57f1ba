//! A simulated world: our engine between a guest on an impaired link and a virtual host,
//! under a virtual clock.
//!
//! [`World::step`] runs everything due at the current instant: the host's connections and
//! applications, socket readiness into the engine, the guest's stack, frames across the link
//! both ways, the engine's timers. When a step moves nothing, [`World::run_until`] jumps the
//! clock to the next deadline of the engine, the guest, the host or the link. Everything is
//! deterministic: the same configuration and seed give the same [`Transcript`], byte for byte.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sans_io::config::Config;
use sans_io::engine::{Counters, Engine, EngineOptions};
use sans_io::flow::{SockEvent, SockRef};
use sans_io::fwd::apply::Applied;
use sans_io::fwd::forwards::{self, ForwardError};
use sans_io::fwd::rule::ForwardTable;
use sans_io::time::Instant;
use sans_io::wire::external::{ExternalPayloads, GuestFrame, NoExternal};
use sans_io::wire::lent::PayloadLender;
use sans_io::wire::offload::{finish_partial_checksum, L4Checksum};
use sans_io::wire::FrameQueue;

use crate::app::App;
use crate::guest::{GuestConn, GuestConnId, SmolGuest};
use crate::host::{Conn, ConnId, EngineId, HostConfig, VirtualHost, MAIN_ENGINE};
use crate::link::{Impair, Pipe};

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    GuestToEngine,
    EngineToGuest,
}

/// Every frame that crossed the link (as it arrived, after impairments), with the time it did.
pub type Transcript = Vec<(Instant, Direction, Vec<u8>)>;

/// How the world ran, for tests and for spotting busy loops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorldStats {
    pub steps: u64,
    /// Socket events delivered in a step where nothing else happened: with level-triggered
    /// epoll, a real event loop would spin on these.
    pub idle_wakeups: u64,
    /// Deadlines that stayed in the past after everything due ran (the clock then moves by a
    /// millisecond): engine, guest, host.
    pub stale_deadlines: [u64; 3],
}

/// What carries the main guest's frames from the engine's output queue instead of the plain
/// copy: a model of a device, such as vhost-user's virtqueues (the tests of `sim/tests`
/// build one over os-shim's), which may lend the queue payload memory.
pub trait LinkModel {
    /// What lends the output queue payload memory, if this link does (see
    /// `sans_io::wire::lent`). Asked once, when the model is installed.
    fn payload_lender(&mut self) -> Option<Box<dyn PayloadLender>>;

    /// The queued frames as the guest gets them (whole, checksums finished), in order,
    /// appended to `delivered`. The queue is cleared afterwards.
    fn carry(&mut self, out: &FrameQueue, delivered: &mut Vec<Vec<u8>>);

    /// The guest's frames of one read as the device hands them to the engine
    /// (`Batch::frames_in_place`): by default whole, as they are.
    fn transmit(&mut self, frames: &[Vec<u8>], to_engine: &mut TransmitTo<'_>) {
        to_engine(
            &mut frames.iter().map(|f| GuestFrame::whole(f)),
            &NoExternal,
        );
    }
}

/// What takes the frames of one read from a [`LinkModel`]: the engine's batch.
pub type TransmitTo<'a> =
    dyn FnMut(&mut dyn Iterator<Item = GuestFrame<'_>>, &dyn ExternalPayloads) + 'a;

/// Another guest with an engine of its own (another pasta or passt on the same host), sharing
/// the world's clock and virtual host: its sockets' events reach its engine only. Its frames
/// are recorded in its own transcript.
pub struct Side {
    pub engine: Engine,
    pub guest: SmolGuest,
    pub to_engine: Pipe,
    pub to_guest: Pipe,
    pub transcript: Transcript,
    out: FrameQueue,
}

impl Side {
    /// This side as engine `id` of the world.
    fn lane(&mut self, id: EngineId) -> Lane<'_> {
        Lane {
            id,
            engine: &mut self.engine,
            guest: &mut self.guest,
            to_engine: &mut self.to_engine,
            to_guest: &mut self.to_guest,
            out: &mut self.out,
            transcript: Some(&mut self.transcript),
            one_by_one: false,
            link: None,
        }
    }
}

/// One guest's part of the world, borrowed for a step: the main guest's (from [`World`]'s
/// fields) or another's (a [`Side`]). The one place where a step drives an engine.
struct Lane<'a> {
    id: EngineId,
    engine: &'a mut Engine,
    guest: &'a mut SmolGuest,
    to_engine: &'a mut Pipe,
    to_guest: &'a mut Pipe,
    out: &'a mut FrameQueue,
    /// Where its frames are recorded, if they are.
    transcript: Option<&'a mut Transcript>,
    /// Frames go to the engine one by one (see [`World::one_by_one`]).
    one_by_one: bool,
    /// The device model frames leave through, if not the plain copy.
    link: Option<&'a mut (dyn LinkModel + 'static)>,
}

impl Lane<'_> {
    /// Runs this guest's part of a step: connections accepted for it, its sockets' events,
    /// its guest's frames and its engine's timers in one batch, then the frames across the
    /// link both ways. Returns whether anything moved.
    fn step(
        mut self,
        now: Instant,
        host: &mut VirtualHost,
        accepts: &[(SockRef, SocketAddr, SocketAddr)],
        events: &[(SockRef, SockEvent)],
    ) -> bool {
        let mut moved = !accepts.is_empty();
        // The sockets this engine opens are its own: their events come back here.
        host.open_as(self.id);
        let mut batch = self.engine.batch(now, host, self.out);
        for &(s, peer, local) in accepts {
            batch.accept(s, peer, local);
        }
        for &(s, ev) in events {
            batch.socket(s, ev);
        }
        self.guest.poll(now);
        while let Some(frame) = self.guest.device.tx.pop_front() {
            self.to_engine.send(now, frame);
            moved = true;
        }
        // The frames that arrived, as one read: coalesced as the OS driver's are.
        let arrived = self.to_engine.due(now);
        if self.one_by_one {
            for frame in &arrived {
                batch.frame(frame);
            }
        } else if let Some(link) = self.link.as_deref_mut() {
            link.transmit(&arrived, &mut |frames, external| {
                batch.frames_in_place(frames, external);
            });
        } else {
            batch.frames(arrived.iter().map(Vec::as_slice));
        }
        moved |= !arrived.is_empty();
        if let Some(t) = self.transcript.as_deref_mut() {
            t.extend(
                arrived
                    .into_iter()
                    .map(|f| (now, Direction::GuestToEngine, f)),
            );
        }
        batch.timeout();
        batch.finish();
        if let Some(link) = self.link.as_deref_mut() {
            let mut delivered = Vec::new();
            link.carry(self.out, &mut delivered);
            for frame in delivered {
                self.to_guest.send(now, frame);
                moved = true;
            }
        } else {
            let mode = self.out.l4_checksum();
            for frame in self.out.iter() {
                let mut frame = frame.to_vec();
                if mode.left_at(&frame).is_some() {
                    // What the tap's kernel does with a frame whose checksum it must finish.
                    finish_partial_checksum(&mut frame);
                }
                self.to_guest.send(now, frame);
                moved = true;
            }
        }
        self.out.clear();
        for frame in self.to_guest.due(now) {
            if let Some(t) = self.transcript.as_deref_mut() {
                t.push((now, Direction::EngineToGuest, frame.clone()));
            }
            self.guest.device.rx.push_back(frame);
            moved = true;
        }
        moved
    }

    /// The earliest deadline of this engine, its guest and its link.
    fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        [
            self.engine.poll_timeout(),
            self.guest.poll_at(now),
            self.to_engine.next_at(),
            self.to_guest.next_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

pub struct World {
    pub now: Instant,
    pub engine: Engine,
    pub guest: SmolGuest,
    pub host: VirtualHost,
    pub transcript: Transcript,
    /// Whether frames are recorded in the transcript.
    pub record: bool,
    pub to_engine: Pipe,
    pub to_guest: Pipe,
    pub stats: WorldStats,
    /// More guests, each with its own engine and link, on the same host.
    pub others: Vec<Side>,
    /// The main guest's frames go to its engine one by one (`Batch::frame`) rather than as
    /// one read (`Batch::frames`, which coalesces): the reference the coalescing is held to.
    pub one_by_one: bool,
    out: FrameQueue,
    /// The main guest's device model, if not the plain copy ([`World::through_link`]).
    link: Option<Box<dyn LinkModel>>,
}

/// Seeds of the link's generators, derived from the world's.
const PIPE_SEED_TO_ENGINE: u64 = 0x6c69_6e6b_2d67_3265;
const PIPE_SEED_TO_GUEST: u64 = 0x6c69_6e6b_2d65_3267;

impl World {
    /// A world with a perfect link and a default virtual host on the configuration's addresses.
    pub fn new(config: Config, seed: u64, guest_mac: [u8; 6]) -> World {
        let guest = SmolGuest::new(guest_mac, Instant::from_millis(1));
        World::with_parts(
            config,
            seed,
            guest,
            HostConfig::default(),
            EngineOptions::default(),
        )
    }

    /// A world from its parts; the host learns its addresses and forwarded ports from `config`.
    pub fn with_parts(
        config: Config,
        seed: u64,
        guest: SmolGuest,
        mut host_config: HostConfig,
        engine_options: EngineOptions,
    ) -> World {
        let now = Instant::from_millis(1);
        if host_config.addrs.is_empty() {
            host_config
                .addrs
                .extend(config.ip4.as_ref().map(|c| IpAddr::V4(c.addr)));
            host_config.addrs.extend(
                config
                    .ip6
                    .as_ref()
                    .filter(|c| !c.addr.is_unspecified())
                    .map(|c| IpAddr::V6(c.addr)),
            );
        }
        let mut host = VirtualHost::new(host_config);
        let mut engine = Engine::with_options(config, seed, now, engine_options);
        // The forwarding listeners, as the shim opens them.
        let failed = engine.listen_forwards(&mut host);
        assert!(failed.is_empty(), "{failed:?}");
        World {
            now,
            engine,
            guest,
            host,
            transcript: Vec::new(),
            record: true,
            to_engine: Pipe::new(seed ^ PIPE_SEED_TO_ENGINE),
            to_guest: Pipe::new(seed ^ PIPE_SEED_TO_GUEST),
            stats: WorldStats::default(),
            others: Vec::new(),
            one_by_one: false,
            out: FrameQueue::new(),
            link: None,
        }
    }

    /// Adds another guest with an engine of its own, configured by `config`, on links with
    /// the main guest's impairments; returns its index in [`World::others`].
    pub fn add_guest(&mut self, config: Config, seed: u64, guest: SmolGuest) -> usize {
        let mut to_engine = Pipe::new(seed ^ PIPE_SEED_TO_ENGINE);
        let mut to_guest = Pipe::new(seed ^ PIPE_SEED_TO_GUEST);
        to_engine.impair = self.to_engine.impair;
        to_guest.impair = self.to_guest.impair;
        self.others.push(Side {
            engine: Engine::new(config, seed, self.now),
            guest,
            to_engine,
            to_guest,
            transcript: Vec::new(),
            out: FrameQueue::new(),
        });
        self.others.len() - 1
    }

    /// The main guest's link takes frames with their transport checksums left to finish as
    /// `mode` says (vhost-user: TCP's and UDP's; pasta's tap: UDP's), and finishes them on the
    /// way, as the guest's kernel would.
    pub fn leave_checksums(&mut self, mode: L4Checksum) {
        self.out.set_l4_checksum(mode);
    }

    /// The main guest's frames leave through `link` (a device model) from now on, and the
    /// output queue borrows payload memory from it if it lends any.
    pub fn through_link(&mut self, mut link: Box<dyn LinkModel>) {
        self.out.set_payload_lender(link.payload_lender());
        self.link = Some(link);
    }

    /// Impairs both directions of the link alike.
    pub fn impair(&mut self, i: Impair) {
        self.to_engine.impair = i;
        self.to_guest.impair = i;
    }

    pub fn counters(&self) -> &Counters {
        self.engine.counters()
    }

    /// The main guest's part of the world, for a step.
    fn main_lane(&mut self) -> (Lane<'_>, &mut VirtualHost) {
        let lane = Lane {
            id: MAIN_ENGINE,
            engine: &mut self.engine,
            guest: &mut self.guest,
            to_engine: &mut self.to_engine,
            to_guest: &mut self.to_guest,
            out: &mut self.out,
            transcript: self.record.then_some(&mut self.transcript),
            one_by_one: self.one_by_one,
            link: self.link.as_deref_mut(),
        };
        (lane, &mut self.host)
    }

    /// Runs everything due now: the host, then the main guest's part (see `Lane::step`), then
    /// each other guest's in order. Returns whether anything moved (then another step at the
    /// same instant may find more to do).
    pub fn step(&mut self) -> bool {
        let now = self.now;
        self.stats.steps += 1;
        let ops_before = self.host.ops();
        let mut moved = self.host.advance(now);
        // Forwarded ports are the main guest's: so are the connections accepted on them.
        self.host.open_as(MAIN_ENGINE);
        let accepts = self.host.take_accepts();
        // Each engine gets its own sockets' events.
        let mut events: Vec<Vec<(SockRef, SockEvent)>> = vec![Vec::new(); 1 + self.others.len()];
        for (s, ev) in self.host.events() {
            events[self.host.owner(s)].push((s, ev));
        }
        let (main, host) = self.main_lane();
        moved |= main.step(now, host, &accepts, &events[MAIN_ENGINE]);
        for (i, side) in self.others.iter_mut().enumerate() {
            let id = MAIN_ENGINE + 1 + i;
            moved |= side.lane(id).step(now, &mut self.host, &[], &events[id]);
        }
        if self.host.ops() != ops_before {
            moved = true;
        }
        if !moved && events.iter().any(|e| !e.is_empty()) {
            self.stats.idle_wakeups += 1;
        }
        moved
    }

    /// The earliest deadline of any part of the world.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let now = self.now;
        let others = self
            .others
            .iter_mut()
            .enumerate()
            .filter_map(|(i, o)| o.lane(MAIN_ENGINE + 1 + i).next_deadline(now))
            .min();
        let host = self.host.poll_at();
        let (mut main, _) = self.main_lane();
        [main.next_deadline(now), host, others]
            .into_iter()
            .flatten()
            .min()
    }

    fn note_stale(&mut self) {
        let now = self.now;
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.stats.stale_deadlines[0] += 1;
        }
        if self.guest.poll_at(now).is_some_and(|t| t <= now) {
            self.stats.stale_deadlines[1] += 1;
        }
        if self.host.poll_at().is_some_and(|t| t <= now) {
            self.stats.stale_deadlines[2] += 1;
        }
    }

    /// Steps until `done` holds or `limit` of virtual time has passed; returns whether `done`
    /// held. Idle periods jump straight to the next deadline.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        // A bound on steps at one instant: a livelock is a bug to report, not to spin on.
        let mut steps_here = 0;
        loop {
            if done(self) {
                return true;
            }
            if self.now > end {
                return false;
            }
            if self.step() {
                steps_here += 1;
                assert!(steps_here < 100_000, "livelock at {:?}", self.now);
                continue;
            }
            steps_here = 0;
            // A quiet step may still have satisfied `done` (a guest socket closed by a RST).
            if done(self) {
                return true;
            }
            match self.next_deadline() {
                Some(t) if t > self.now => self.now = t,
                Some(_) => {
                    self.note_stale();
                    self.now = self.now + Duration::from_millis(1);
                }
                None => self.now = end + Duration::from_nanos(1),
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// The guest opens a TCP connection to `remote` running `app`.
    pub fn guest_connect(&mut self, remote: SocketAddr, app: App) -> GuestConnId {
        self.guest.tcp_connect(remote, app)
    }

    /// The guest listens on `port` for one connection, running `app` on it.
    pub fn guest_listen(&mut self, port: u16, app: App) -> GuestConnId {
        self.guest.tcp_listen(port, app)
    }

    /// A remote client at `from` connects to the host at `to`, running `app`.
    pub fn remote_connect(&mut self, from: SocketAddr, to: SocketAddr, app: App) -> ConnId {
        self.host.remote_connect(from, to, app)
    }

    /// Replaces the main engine's forwarding table of `direction` with `table`, opening and
    /// closing the virtual host's listeners as the shim would (`Engine::apply_forwards`).
    pub fn apply_forwards(
        &mut self,
        direction: forwards::Direction,
        table: ForwardTable,
    ) -> Result<Applied, ForwardError> {
        self.host.open_as(MAIN_ENGINE);
        self.engine.apply_forwards(direction, table, &mut self.host)
    }

    pub fn guest_conn(&self, id: GuestConnId) -> &GuestConn {
        self.guest.conn(id)
    }

    pub fn host_conn(&self, id: ConnId) -> &Conn {
        self.host.conn(id)
    }

    /// Writes the transcript as a pcap file (for a look with tcpdump or wireshark).
    pub fn save_pcap(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, crate::capture::pcap(&self.transcript))
    }
}
