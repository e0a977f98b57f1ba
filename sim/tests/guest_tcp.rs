//! The guest's TCP helpers against a second smoltcp guest, back to back (no engine): the
//! applications' byte patterns, half-closes and resets behave as the TCP scenarios expect.

use sans_io::time::Instant;
use sim::guest::{GuestConnId, SmolGuest};
use sim::scenario::addr;
use sim::{App, Pattern};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

fn pair() -> (SmolGuest, SmolGuest) {
    let now = Instant::from_millis(1);
    let mut a = SmolGuest::new([2, 0, 0, 0, 0, 1], now);
    let mut b = SmolGuest::new([2, 0, 0, 0, 0, 2], now);
    a.configure_ipv4(Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 1), 24), None);
    b.configure_ipv4(Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 2), 24), None);
    (a, b)
}

/// Runs both until `done` or 60 virtual seconds; returns the time it took.
fn run(
    a: &mut SmolGuest,
    b: &mut SmolGuest,
    done: impl Fn(&SmolGuest, &SmolGuest) -> bool,
) -> Instant {
    let mut now = Instant::from_millis(1);
    while now < Instant::from_millis(60_000) {
        if done(a, b) {
            return now;
        }
        let mut moved = false;
        for _ in 0..100 {
            a.poll(now);
            b.poll(now);
            let ab: Vec<_> = a.device.tx.drain(..).collect();
            let ba: Vec<_> = b.device.tx.drain(..).collect();
            if ab.is_empty() && ba.is_empty() {
                break;
            }
            moved = true;
            b.device.rx.extend(ab);
            a.device.rx.extend(ba);
        }
        let next = [a.poll_at(now), b.poll_at(now)].into_iter().flatten().min();
        now = match next {
            Some(t) if t > now && !moved => t,
            _ => now + std::time::Duration::from_micros(100),
        };
    }
    panic!("not done in time");
}

fn done(g: &SmolGuest, id: GuestConnId) -> bool {
    g.conn(id).done()
}

#[test]
fn source_to_sink_and_reply_after_half_close() {
    let (mut a, mut b) = pair();
    let srv = b.tcp_listen(80, App::sink().reply_after_eof(Pattern(2), 70_000));
    let cli = a.tcp_connect(
        addr("10.0.0.2:80"),
        App::source_pattern(Pattern(1), 300_000),
    );
    run(&mut a, &mut b, |a, b| done(a, cli) && done(b, srv));
    Pattern(1).check(b.conn(srv).received(), 300_000).unwrap();
    Pattern(2).check(a.conn(cli).received(), 70_000).unwrap();
    assert!(a.conn(cli).fin_seen && b.conn(srv).fin_seen);
    assert!(a.conn(cli).reset_at.is_none() && b.conn(srv).reset_at.is_none());
    assert_eq!(b.conn(srv).remote, Some(addr("10.0.0.1:49152")));
}

#[test]
fn echo_and_slow_reader() {
    let (mut a, mut b) = pair();
    let srv = b.tcp_listen(7, App::echo());
    let cli = a.tcp_connect(addr("10.0.0.2:7"), App::source_pattern(Pattern(3), 100_000));
    run(&mut a, &mut b, |a, b| done(a, cli) && done(b, srv));
    Pattern(3).check(a.conn(cli).received(), 100_000).unwrap();

    let (mut a, mut b) = pair();
    let srv = b.tcp_listen(9, App::slow_sink(1000));
    let cli = a.tcp_connect(addr("10.0.0.2:9"), App::source_pattern(Pattern(4), 200_000));
    let t = run(&mut a, &mut b, |a, b| done(a, cli) && done(b, srv));
    Pattern(4).check(b.conn(srv).received(), 200_000).unwrap();
    assert!(t > Instant::from_millis(190), "{t:?}");
}

#[test]
fn resets_are_seen() {
    let (mut a, mut b) = pair();
    let srv = b.tcp_listen(9, App::sink().reset_after(10_000));
    let cli = a.tcp_connect(addr("10.0.0.2:9"), App::source(1 << 30).no_fin());
    run(&mut a, &mut b, |a, _| a.conn(cli).reset_at.is_some());
    assert!(b.conn(srv).app.aborted);
    assert!(
        b.conn(srv).reset_at.is_none(),
        "its own abort is no reset seen"
    );
    // Refused: nobody listens.
    let cli = a.tcp_connect(addr("10.0.0.2:10"), App::sink());
    run(&mut a, &mut b, |a, _| a.conn(cli).reset_at.is_some());
    assert!(a.conn(cli).established_at.is_none());
}
