//! pasta's `auto` port forwarding (`-t`, `-u`, `-T`, `-U auto`, the defaults): every
//! second, the ports servers have bound inside the namespace are read from its socket
//! tables, and pasta listens on the same ports of the host (both families) or stops listening
//! where the server went; and the other way round for `-T` and `-U`, the host's servers'
//! ports on the namespace's loopback. Our own listeners show up in the other side's tables: they
//! are never followed back. A port we can't get (in use, privileged) is reported once, and
//! tried again only after the server went and came back. Ports an explicit forwarding rule
//! names (added at run time, see `crate::forwards`) are that rule's: `auto` leaves them
//! alone, and gives them up when such a rule comes.

use std::ops::RangeInclusive;
use std::os::fd::{AsFd, OwnedFd};

use os_shim::ns::NsError;
use os_shim::ns_listeners::NsAddrs;
use os_shim::procnet::SocketTables;
use os_shim::sockets::{ListenOptions, Sockets};
use sans_io::config::Config;
use sans_io::engine::Engine;
use sans_io::flow::Proto;
use sans_io::fwd::forwards::Direction;
use sans_io::fwd::procnet::PortSet;
use sans_io::fwd::rule::ForwardTable;
use sans_io::fwd::{auto_ports, Forward, ForwardMode};

use crate::datapath::Periodic;

/// One protocol's `auto` state.
#[derive(Debug, Default)]
struct Followed {
    /// Bound inside, as last scanned.
    bound: PortSet,
    /// Where we listen on the host now.
    listening: PortSet,
    /// Ports we could not listen on, not tried again while they stay bound inside.
    failed: PortSet,
}

pub struct AutoForward {
    /// The namespace's socket tables, for `-t`/`-u auto`.
    tables: Option<SocketTables>,
    tcp: Option<Followed>,
    udp: Option<Followed>,
    /// The host's socket tables, for `-T auto` and `-U auto` (whose listeners the bypass
    /// makes in the namespace).
    host_tables: Option<SocketTables>,
    tcp_out: Option<Followed>,
    udp_out: Option<Followed>,
    opts: ListenOptions,
    ephemeral: RangeInclusive<u16>,
}

impl AutoForward {
    /// `None` unless TCP or UDP forwarding into the namespace is `auto`.
    pub fn new(config: &Config, netns: &OwnedFd) -> Result<Option<AutoForward>, NsError> {
        let follows = |on: bool, mode: &ForwardMode| {
            (on && *mode == ForwardMode::Auto).then(Followed::default)
        };
        let tcp = follows(config.protocols.tcp, &config.forwarding.tcp_in);
        let udp = follows(config.protocols.udp, &config.forwarding.udp_in);
        let tcp_out = follows(config.protocols.tcp, &config.forwarding.tcp_out);
        let udp_out = follows(config.protocols.udp, &config.forwarding.udp_out);
        if tcp.is_none() && udp.is_none() && tcp_out.is_none() && udp_out.is_none() {
            return Ok(None);
        }
        let tables = if tcp.is_some() || udp.is_some() {
            Some(SocketTables::open_in(netns.as_fd())?)
        } else {
            None
        };
        Ok(Some(AutoForward {
            tables,
            tcp,
            udp,
            host_tables: (tcp_out.is_some() || udp_out.is_some()).then(SocketTables::open_here),
            tcp_out,
            udp_out,
            opts: ListenOptions {
                ipv4: config.ip4.is_some(),
                ipv6: config.ip6.is_some(),
                freebind: config.freebind,
            },
            ephemeral: os_shim::hostinfo::ephemeral_port_range(),
        }))
    }

    /// Whether `-T auto` or `-U auto` listen in the namespace after start-up (through the
    /// bypass's namespace thread).
    pub fn listens_in_namespace(&self) -> bool {
        self.tcp_out.is_some() || self.udp_out.is_some()
    }

    /// Scans the namespace (and the host) and listens accordingly.
    pub fn update(&mut self, engine: &mut Engine, sockets: &mut Sockets) {
        if let Some(tables) = self.tables.as_mut() {
            let (mut tcp_bound, mut udp_bound) = (PortSet::new(), PortSet::new());
            if let Err(e) = tables.scan(&mut tcp_bound, &mut udp_bound) {
                log::debug!("cannot read the namespace's socket tables: {e}");
                return;
            }
            // Our -T and -U listeners sit in the namespace: not servers to forward to.
            if let Some(bypass) = sockets.bypass() {
                for port in bypass.listening_ports(Proto::Tcp) {
                    tcp_bound.remove(port);
                }
                for port in bypass.listening_ports(Proto::Udp) {
                    udp_bound.remove(port);
                }
            }
            for (proto, followed, bound) in [
                (Proto::Tcp, self.tcp.as_mut(), tcp_bound),
                (Proto::Udp, self.udp.as_mut(), udp_bound),
            ] {
                if let Some(f) = followed {
                    f.bound = unclaimed(bound, engine, Direction::Inbound, proto);
                    apply(proto, f, &self.ephemeral, self.opts, engine, sockets);
                }
            }
        }
        if let Some(tables) = self.host_tables.as_mut() {
            let (mut tcp_bound, mut udp_bound) = (PortSet::new(), PortSet::new());
            if let Err(e) = tables.scan(&mut tcp_bound, &mut udp_bound) {
                log::debug!("cannot read the host's socket tables: {e}");
                return;
            }
            // Nor are our own -t and -u listeners on the host.
            for addr in sockets.listening() {
                tcp_bound.remove(addr.port());
            }
            let ours: Vec<u16> = sockets.udp_listeners().map(|(_, a)| a.port()).collect();
            for port in ours {
                udp_bound.remove(port);
            }
            for (proto, followed, bound) in [
                (Proto::Tcp, self.tcp_out.as_mut(), tcp_bound),
                (Proto::Udp, self.udp_out.as_mut(), udp_bound),
            ] {
                if let Some(f) = followed {
                    f.bound = unclaimed(bound, engine, Direction::Outbound, proto);
                    apply_out(proto, f, &self.ephemeral, self.opts, sockets);
                }
            }
        }
    }
}

impl AutoForward {
    /// Stops listening on the ports `table` (about to be `direction`'s) names, so that its
    /// own listeners can have them; should the table not take, the next scan listens again.
    pub fn give_up_ports(
        &mut self,
        direction: Direction,
        table: &ForwardTable,
        engine: &mut Engine,
        sockets: &mut Sockets,
    ) {
        let followed = match direction {
            Direction::Inbound => [
                (Proto::Tcp, self.tcp.as_mut()),
                (Proto::Udp, self.udp.as_mut()),
            ],
            Direction::Outbound => [
                (Proto::Tcp, self.tcp_out.as_mut()),
                (Proto::Udp, self.udp_out.as_mut()),
            ],
        };
        for (proto, f) in followed {
            let Some(f) = f else { continue };
            let named = |p: u16| {
                table
                    .rules()
                    .iter()
                    .any(|r| r.proto == proto && r.first <= p && p <= r.last)
            };
            let given_up: Vec<u16> = f.listening.iter().filter(|&p| named(p)).collect();
            for port in given_up {
                f.listening.remove(port);
                match direction {
                    Direction::Inbound => {
                        for s in sockets.unlisten(proto, port) {
                            engine.remove_udp_listener(s, sockets);
                        }
                    }
                    Direction::Outbound => {
                        if let Some(bypass) = sockets.bypass_mut() {
                            bypass.unlisten(proto, port);
                        }
                    }
                }
                log::debug!("auto: {proto:?} port {port} is an explicit forward's now");
            }
        }
    }
}

/// `bound`, less the ports an explicit rule of `direction` names for `proto`.
fn unclaimed(mut bound: PortSet, engine: &Engine, direction: Direction, proto: Proto) -> PortSet {
    let forwards = engine.forwards();
    if forwards.table(direction).is_empty() {
        return bound;
    }
    let claimed: Vec<u16> = bound
        .iter()
        .filter(|&p| forwards.claims(direction, proto, p))
        .collect();
    for port in claimed {
        bound.remove(port);
    }
    bound
}

impl Followed {
    /// What to change so that we listen where something is bound (less the `ephemeral`
    /// ports): the ports to stop listening on (already taken off `listening`), and the ports
    /// to start on (report each with [`Followed::started`]). Failures are forgotten once
    /// their port is unbound, so that a server coming back gets another try.
    fn plan(&mut self, ephemeral: &RangeInclusive<u16>) -> (Vec<u16>, Vec<u16>) {
        let mut wanted = PortSet::new();
        for port in auto_ports(&self.bound, ephemeral.clone()) {
            wanted.insert(port);
        }
        let gone: Vec<u16> = self
            .listening
            .iter()
            .filter(|&p| !wanted.contains(p))
            .collect();
        for &port in &gone {
            self.listening.remove(port);
        }
        let unbound: Vec<u16> = self
            .failed
            .iter()
            .filter(|&p| !wanted.contains(p))
            .collect();
        for port in unbound {
            self.failed.remove(port);
        }
        let new = wanted
            .iter()
            .filter(|&p| !self.listening.contains(p) && !self.failed.contains(p))
            .collect();
        (gone, new)
    }

    /// Whether listening on `port` worked (if not, it isn't tried again while bound).
    fn started(&mut self, port: u16, ok: bool) {
        if ok {
            self.listening.insert(port);
        } else {
            self.failed.insert(port);
        }
    }
}

/// `-T auto`, `-U auto`: listens on the namespace's loopback where the host has servers.
fn apply_out(
    proto: Proto,
    f: &mut Followed,
    ephemeral: &RangeInclusive<u16>,
    opts: ListenOptions,
    sockets: &mut Sockets,
) {
    let Some(bypass) = sockets.bypass_mut() else {
        return;
    };
    let (gone, new) = f.plan(ephemeral);
    for port in gone {
        bypass.unlisten(proto, port);
        log::debug!("auto: no longer forwarding namespace {proto:?} port {port}");
    }
    for port in new {
        let at = NsAddrs::Loopback {
            v4: opts.ipv4,
            v6: opts.ipv6,
        };
        let result = bypass.listen_in(proto, port, port, at);
        let ok = match result {
            Ok((n, _)) if n > 0 => {
                log::debug!("auto: forwarding namespace {proto:?} port {port} to the host");
                true
            }
            Ok((_, failed)) => {
                if let Some((addr, e)) = failed.first() {
                    log::warn!("auto: cannot listen on {addr} in the namespace: {e}");
                }
                false
            }
            Err(e) => {
                log::warn!("auto: {e}");
                false
            }
        };
        f.started(port, ok);
    }
}

/// `-t auto`, `-u auto`: listens on the host where the namespace has servers.
fn apply(
    proto: Proto,
    f: &mut Followed,
    ephemeral: &RangeInclusive<u16>,
    opts: ListenOptions,
    engine: &mut Engine,
    sockets: &mut Sockets,
) {
    let (gone, new) = f.plan(ephemeral);
    for port in gone {
        for s in sockets.unlisten(proto, port) {
            engine.remove_udp_listener(s, sockets);
        }
        log::debug!("auto: no longer forwarding {proto:?} port {port}");
    }
    for port in new {
        let forward = Forward {
            bind: None,
            iface: None,
            port,
            to: port,
        };
        let (bound, errors) = sockets.listen_forward(proto, &forward, opts);
        f.started(port, bound > 0);
        if bound == 0 {
            if let Some(e) = errors.first() {
                log::warn!("auto: {e}");
            }
            continue;
        }
        log::debug!("auto: forwarding {proto:?} port {port}");
        if proto == Proto::Udp {
            let new: Vec<_> = sockets
                .udp_listeners()
                .filter(|(_, a)| a.port() == port)
                .collect();
            for (s, local) in new {
                engine.add_udp_listener(s, local, forward.iface.clone());
            }
        }
    }
}

impl Periodic for AutoForward {
    fn tick(&mut self, engine: &mut Engine, sockets: &mut Sockets) {
        self.update(engine, sockets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(set: &PortSet) -> Vec<u16> {
        set.iter().collect()
    }

    #[test]
    fn plan_follows_bound_ports_and_retries_failures_only_after_they_went() {
        let mut f = Followed::default();
        for p in [22, 80, 40000] {
            f.bound.insert(p);
        }
        let (gone, new) = f.plan(&(32768..=60999));
        assert_eq!((gone, new.clone()), (vec![], vec![22, 80]));
        f.started(22, true);
        f.started(80, false);
        // Nothing changed: nothing to do, the failure isn't retried.
        assert_eq!(f.plan(&(32768..=60999)), (vec![], vec![]));
        // 22 goes, 80 goes and comes back: 22 stops, 80 is tried again.
        f.bound.remove(22);
        f.bound.remove(80);
        assert_eq!(f.plan(&(32768..=60999)), (vec![22], vec![]));
        f.bound.insert(80);
        assert_eq!(f.plan(&(32768..=60999)), (vec![], vec![80]));
        assert!(ports(&f.listening).is_empty());
    }
}
