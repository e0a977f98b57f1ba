//! Bulk transfers through the engine, byte for byte: guest to remote and back, over a clean
//! link and an impaired one, IPv4 and IPv6, to a remote host and to the host's loopback.

use std::time::Duration;

use sim::scenario::{addr, GATEWAY, REMOTE};
use sim::world::World;
use sim::{App, Impair, Pattern, Scenario};

const MIB: u64 = 1 << 20;

fn upload(s: Scenario, to: &str, seen_by_host: &str, len: u64) {
    let mut w = s.remote_server(seen_by_host, App::sink()).build();
    let c = w.guest_connect(addr(to), App::source_pattern(Pattern(7), len));
    let done = w.run_until_all_done(Duration::from_secs(1800));
    assert!(done, "{}", w.diagnose());
    let h = w.host.conns_to(addr(seen_by_host));
    assert_eq!(h.len(), 1, "{}", w.diagnose());
    Pattern(7)
        .check(w.host_conn(h[0]).received(), len)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.diagnose()));
    assert!(w.guest_conn(c).fin_seen && w.guest_conn(c).reset_at.is_none());
    w.assert_no_violations();
}

fn download(s: Scenario, to: &str, seen_by_host: &str, len: u64) {
    download_world(s, to, seen_by_host, len);
}

fn download_world(s: Scenario, to: &str, seen_by_host: &str, len: u64) -> World {
    let mut w = s
        .remote_server(seen_by_host, App::source_pattern(Pattern(8), len))
        .build();
    let c = w.guest_connect(addr(to), App::sink());
    let done = w.run_until_all_done(Duration::from_secs(1800));
    assert!(done, "{}", w.diagnose());
    Pattern(8)
        .check(w.guest_conn(c).received(), len)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.diagnose()));
    assert!(w.guest_conn(c).reset_at.is_none(), "{}", w.diagnose());
    assert!(w.guest_conn(c).fin_seen, "{}", w.diagnose());
    w.assert_no_violations();
    w
}

fn remote(port: u16) -> String {
    format!("{REMOTE}:{port}")
}

fn lossy() -> Impair {
    Impair {
        delay: Duration::from_micros(100),
        jitter: Duration::from_micros(50),
        ..Impair::lossy(0.02)
    }
}

#[test]
fn upload_1mib_clean() {
    upload(Scenario::new(1), &remote(9), &remote(9), MIB);
}

#[test]
fn download_1mib_clean() {
    let w = download_world(Scenario::new(2), &remote(19), &remote(19), MIB);
    // The remote's FIN came while all its data was in flight (no readable interest): the
    // peek after the guest's last ACK told the end, no event did.
    assert_eq!(w.host.stats.eof_peeks, 1, "{}", w.diagnose());
    // Several segments per peek: one a segment would be over 700 for this MiB.
    let st = &w.host.stats;
    assert!(st.peeks < 100, "{} peeks", st.peeks);
    assert_eq!(st.peeks, st.slot_peeks, "every peek fills frame slots");
}

#[test]
fn upload_1mib_lossy() {
    upload(
        Scenario::new(3).impair(lossy()),
        &remote(9),
        &remote(9),
        MIB,
    );
}

#[test]
fn download_1mib_lossy() {
    download(
        Scenario::new(4).impair(lossy()),
        &remote(19),
        &remote(19),
        MIB,
    );
}

#[test]
fn lossy_uploads_fill_their_holes_without_waiting_for_timeouts() {
    // The engine drops out-of-order data, so after a loss smoltcp (no SACK, no NewReno) must
    // resend everything beyond it one fast retransmit at a time, and backs its retransmission
    // timer off whenever it misses one: before hole prompts, this MiB took 78 to 236 s of
    // virtual time with these seeds (now well under 2 s); the other way, 11 ms.
    for seed in [3, 21, 22, 23] {
        let server = remote(9);
        let mut w = Scenario::new(seed)
            .impair(lossy())
            .remote_server(&server, App::sink())
            .build();
        let start = w.now;
        let c = w.guest_connect(addr(&server), App::source_pattern(Pattern(7), MIB));
        let done = w.run_until_all_done(Duration::from_secs(10));
        assert!(done, "seed {seed}: {}", w.diagnose());
        assert!(w.now - start < Duration::from_secs(10));
        let h = w.host.conns_to(addr(&server));
        Pattern(7)
            .check(w.host_conn(h[0]).received(), MIB)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", w.diagnose()));
        assert!(w.guest_conn(c).reset_at.is_none());
        assert!(w.counters().tcp.hole_prompts > 0, "{}", w.diagnose());
        w.assert_no_violations();
    }
}

#[test]
fn clean_links_never_prompt() {
    let s = Scenario::new(15)
        .remote_server(&remote(9), App::sink())
        .remote_server(&remote(19), App::source_pattern(Pattern(8), MIB));
    let mut w = s.build();
    let up = w.guest_connect(addr(&remote(9)), App::source_pattern(Pattern(7), MIB));
    let down = w.guest_connect(addr(&remote(19)), App::sink());
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    assert!(w.guest_conn(up).done() && w.guest_conn(down).done());
    let tcp = &w.counters().tcp;
    assert_eq!(
        (tcp.out_of_order, tcp.hole_prompts, tcp.prompt_repeats),
        (0, 0, 0),
        "{}",
        w.diagnose()
    );
}

#[test]
fn to_the_host_loopback_through_the_gateway_address() {
    let gw = format!("{GATEWAY}:2222");
    upload(Scenario::new(5), &gw, "127.0.0.1:2222", 200_000);
    download(Scenario::new(6), &gw, "127.0.0.1:2222", 200_000);
}

#[test]
fn over_ipv6() {
    upload(
        Scenario::new(7),
        "[2001:db8:2::10]:9",
        "[2001:db8:2::10]:9",
        300_000,
    );
    download(
        Scenario::new(8).impair(lossy()),
        "[2001:db8:2::10]:19",
        "[2001:db8:2::10]:19",
        300_000,
    );
}

#[test]
fn guest_mss_is_respected_with_a_large_engine_mtu() {
    // The engine runs with its default 65520-byte MTU; the guest's link takes 1500.
    let s = Scenario::new(9).options(|o| o.mtu = None).guest_mtu(1500);
    download(s, &remote(19), &remote(19), 300_000);
}

#[test]
fn truncated_frames_are_dropped_like_losses() {
    let trunc = Impair {
        truncate: 0.02,
        delay: Duration::from_micros(100),
        ..Impair::default()
    };
    let server = remote(19);
    let mut w = Scenario::new(10)
        .impair(trunc)
        .remote_server(&server, App::source_pattern(Pattern(8), 300_000))
        .build();
    let c = w.guest_connect(addr(&server), App::source_pattern(Pattern(9), 300_000));
    assert!(
        w.run_until_all_done(Duration::from_secs(1800)),
        "{}",
        w.diagnose()
    );
    Pattern(8)
        .check(w.guest_conn(c).received(), 300_000)
        .unwrap();
    let h = w.host_conn(w.host.conns_to(addr(&server))[0]);
    Pattern(9).check(h.received(), 300_000).unwrap();
    assert!(w.to_engine.stats.truncated > 0);
    assert!(w.counters().malformed > 0, "{}", w.diagnose());
    w.assert_no_violations();
}

#[test]
fn large_windows() {
    // 1 MiB socket buffers on the guest: window scaling on both sides.
    let s = || {
        Scenario::new(11).guest_buffer(1 << 20).host(|h| {
            h.sndbuf = 1 << 20;
            h.rcvbuf = 1 << 20;
        })
    };
    upload(s(), &remote(9), &remote(9), 4 * MIB);
    download(s(), &remote(19), &remote(19), 4 * MIB);
}

#[test]
fn jumbo_frames() {
    // pasta's default MTU on both sides: segments of up to 65480 bytes.
    let s = || {
        Scenario::new(12)
            .mtu(65520)
            .guest_buffer(1 << 20)
            .host(|h| h.sndbuf = 1 << 20)
    };
    upload(s(), &remote(9), &remote(9), 4 * MIB);
    download(s(), &remote(19), &remote(19), 4 * MIB);
}

#[test]
fn a_clean_transfer_never_wakes_the_loop_for_nothing() {
    let server = remote(19);
    let mut w = Scenario::new(13)
        .remote_server(&server, App::source(MIB))
        .build();
    w.guest_connect(addr(&server), App::slow_sink(5000));
    assert!(
        w.run_until_all_done(Duration::from_secs(60)),
        "{}",
        w.diagnose()
    );
    // Level-triggered readiness the engine couldn't act on would spin a real epoll loop.
    assert_eq!(w.stats.idle_wakeups, 0, "{}", w.diagnose());
    assert_eq!(w.stats.stale_deadlines, [0, 0, 0], "{}", w.diagnose());
}

#[test]
fn ipv6_connections_come_from_the_global_address() {
    let server = "[2001:db8:2::10]:9";
    let mut w = Scenario::new(14).remote_server(server, App::sink()).build();
    let c = w.guest_connect(addr(server), App::source(1000));
    assert!(
        w.run_until_all_done(Duration::from_secs(10)),
        "{}",
        w.diagnose()
    );
    let seg = &sim::capture::tcp_segments(&w.transcript)[0];
    assert_eq!(seg.src, addr("[2001:db8:1::2]:49152"));
    assert!(w.guest_conn(c).done());
}
