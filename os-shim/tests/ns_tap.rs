//! The tap device and `nsconf::configure` in a namespace made by `ns::spawn`, checked from
//! inside with `nsenter ip` (root; the unprivileged path is in ns_unpriv.rs).

mod ns_common;

use std::io;
use std::time::{Duration, Instant};

use ns_common::{ip_in, require, spawn_or_skip, test_config, Need, BAD_ROUTE, NS_MAC};
use os_shim::ns::Spawned;
use os_shim::nsconf::configure;
use os_shim::tap::{ReadFrame, Tap, TapError};
use sans_io::config::Config;
use sans_io::wire::build::{udp_frame, Route};
use sans_io::wire::offload::L4Checksum;
use sans_io::wire::{FrameQueue, MacAddr};

/// Root (ns_unpriv.rs covers the unprivileged path), /dev/net/tun, and `nsenter` and `ip` to
/// look inside.
fn tun_usable() -> bool {
    require(&[
        Need::Root,
        Need::Tun,
        Need::Tool("nsenter"),
        Need::Tool("ip"),
    ])
}

/// An ARP request from `our_mac`/`sender` for `target`.
fn arp_request(our_mac: MacAddr, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&our_mac.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&our_mac.0);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// The next frame the tap has, into `buf`, waiting for one until `deadline`.
fn next_frame(tap: &Tap, buf: &mut [u8], deadline: Instant) -> Option<ReadFrame> {
    while Instant::now() < deadline {
        match tap.read_frame(buf) {
            Ok(frame) => return Some(frame),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("read_frame: {e}"),
        }
    }
    None
}

/// Reads frames for at most `timeout` until one satisfies `want`.
fn read_until(tap: &Tap, timeout: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0; 65536 + 14];
    while let Some(frame) = next_frame(tap, &mut buf, deadline) {
        if want(&buf[..frame.len]) {
            return Some(buf[..frame.len].to_vec());
        }
    }
    None
}

/// A namespace for `test` with the tap in it, configured as `--config-net` does (`None`
/// where the test can't run here).
fn configured_tap(test: &str) -> Option<(Spawned, Tap, Config)> {
    if !tun_usable() {
        return None;
    }
    let sp = spawn_or_skip(test, &["true"], false)?;
    let config = test_config("pasta0");
    let tap = Tap::open_in(&sp.ns.netns, &config.ns_ifname).unwrap();
    configure(&sp.ns.netns, tap.ifindex(), &config, true).unwrap();
    Some((sp, tap, config))
}

#[test]
fn tap_configured_with_config_net() {
    const TEST: &str = "tap_configured_with_config_net";
    if !tun_usable() {
        return;
    }
    let Some(sp) = spawn_or_skip(TEST, &["true"], false) else {
        return;
    };
    let nspath = sp.ns.netns_path.to_str().unwrap().to_owned();
    let config = test_config("pasta0");

    let tap = Tap::open_in(&sp.ns.netns, &config.ns_ifname).unwrap();
    assert_eq!(tap.name(), "pasta0");
    assert!(tap.ifindex() > 1);
    let mut buf = [0u8; 2048];
    let err = tap.read_frame(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

    let conf = configure(&sp.ns.netns, tap.ifindex(), &config, true).unwrap();
    assert_eq!(conf.mac, NS_MAC);
    // The unreachable gateway is skipped with a warning; the rest gets in.
    assert_eq!(conf.warnings.len(), 1, "{:?}", conf.warnings);
    assert!(
        conf.warnings[0].starts_with(&format!(
            "cannot copy route {BAD_ROUTE}: Network is unreachable"
        )),
        "{:?}",
        conf.warnings
    );

    let link = ip_in(&nspath, &["-o", "link", "show", "dev", "pasta0"]);
    assert!(link.contains("mtu 65520"), "{link}");
    assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
    assert!(link.contains(&format!("link/ether {NS_MAC}")), "{link}");
    let lo = ip_in(&nspath, &["-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");

    let addrs = ip_in(&nspath, &["-o", "addr", "show", "dev", "pasta0"]);
    assert!(addrs.contains("inet 192.0.2.10/24"), "{addrs}");
    let v6 = addrs
        .lines()
        .find(|l| l.contains("inet6 2001:db8::10/64"))
        .unwrap_or_else(|| panic!("{addrs}"));
    assert!(!v6.contains("tentative"), "{v6}");
    // DAD is off on the tap: the link-local address is usable at once too.
    let ll = addrs
        .lines()
        .find(|l| l.contains("inet6 fe80::"))
        .unwrap_or_else(|| panic!("{addrs}"));
    assert!(!ll.contains("tentative"), "{ll}");

    let routes4 = ip_in(&nspath, &["-4", "route", "show"]);
    for want in [
        "default via 192.0.2.1 dev pasta0",
        "198.51.100.0/24 dev pasta0",
        // Its gateway was reachable only once the route above was in: the retry got it in.
        "203.0.113.0/24 via 198.51.100.1 dev pasta0",
    ] {
        assert!(routes4.contains(want), "{want} missing from:\n{routes4}");
    }
    assert!(!routes4.contains("198.18.0.1"), "{routes4}");
    let routes6 = ip_in(&nspath, &["-6", "route", "show"]);
    assert!(
        routes6.contains("default via fe80::1 dev pasta0"),
        "{routes6}"
    );
    assert!(
        routes6.contains("2001:db8:5::/48 via 2001:db8::1 dev pasta0 metric 50"),
        "{routes6}"
    );

    // Again: what is there already is fine, the bad route is still refused.
    let again = configure(&sp.ns.netns, tap.ifindex(), &config, true).unwrap();
    assert_eq!(again.warnings, conf.warnings);

    // Frames: a runt is refused without harm, then the kernel answers ARP.
    let err = tap.write_frame(&[0u8; 4]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    tap.write_frame(&arp_request(
        config.our_mac,
        [192, 0, 2, 1],
        [192, 0, 2, 10],
    ))
    .unwrap();
    let reply = read_until(&tap, Duration::from_secs(2), |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
    })
    .expect("no ARP reply within 2 s");
    assert_eq!(reply[..6], config.our_mac.0);
    assert_eq!(reply[22..28], NS_MAC.0, "sender MAC");
    assert_eq!(reply[28..32], [192, 0, 2, 10], "sender IP");
}

#[test]
fn without_config_net_only_lo_comes_up() {
    const TEST: &str = "without_config_net_only_lo_comes_up";
    if !tun_usable() {
        return;
    }
    let Some(sp) = spawn_or_skip(TEST, &["true"], false) else {
        return;
    };
    let nspath = sp.ns.netns_path.to_str().unwrap().to_owned();
    let mut config = test_config("ignored");
    config.ns_mac = None;
    // An empty name: the kernel picks one.
    let tap = Tap::open_in(&sp.ns.netns, "").unwrap();
    assert!(tap.name().starts_with("tap"), "{}", tap.name());
    let conf = configure(&sp.ns.netns, tap.ifindex(), &config, false).unwrap();
    assert!(conf.warnings.is_empty());

    let link = ip_in(&nspath, &["-o", "link", "show", "dev", tap.name()]);
    assert!(link.contains(&format!("link/ether {}", conf.mac)), "{link}");
    assert!(!link.contains(",UP") && !link.contains("<UP"), "{link}");
    assert!(!link.contains("mtu 65520"), "{link}");
    let lo = ip_in(&nspath, &["-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let addrs = ip_in(&nspath, &["-o", "-4", "addr", "show", "dev", tap.name()]);
    assert!(addrs.trim().is_empty(), "{addrs}");
    // Down: the kernel refuses frames.
    let err = tap
        .write_frame(&arp_request(
            config.our_mac,
            [192, 0, 2, 1],
            [192, 0, 2, 10],
        ))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

#[test]
fn tap_errors_name_the_device() {
    const TEST: &str = "tap_errors_name_the_device";
    if !tun_usable() {
        return;
    }
    let Some(sp) = spawn_or_skip(TEST, &["true"], false) else {
        return;
    };
    let err = Tap::open_in(&sp.ns.netns, "a-name-too-long-for-linux").unwrap_err();
    assert!(matches!(err, TapError::BadName { .. }), "{err}");
    // "lo" exists and is no tap.
    let err = Tap::open_in(&sp.ns.netns, "lo").unwrap_err();
    assert!(
        err.to_string().starts_with("cannot create tap device lo: "),
        "{err}"
    );
}

/// Datagrams written as runs (one write each, the kernel cutting them apart) reach a socket in
/// the namespace one by one, each its own size and bytes, in order, both families; frames
/// that make no run go as they are, their UDP checksums left for the kernel.
#[test]
fn runs_of_datagrams_arrive_one_by_one() {
    const TEST: &str = "runs_of_datagrams_arrive_one_by_one";
    let Some((sp, mut tap, config)) = configured_tap(TEST) else {
        return;
    };
    let sockets = os_shim::ns::in_netns(&sp.ns.netns, || {
        ["192.0.2.10:5000", "[2001:db8::10]:5000"].map(|a| {
            let s = std::net::UdpSocket::bind(a).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
    })
    .unwrap();
    // A run ended by a shorter datagram, a run ended by a longer one, which goes alone, as
    // does the still longer one after it.
    let sizes: Vec<usize> = [
        vec![1000; 20],
        vec![300],
        vec![1000; 5],
        vec![2000],
        vec![3000],
    ]
    .concat();
    for (family, (peer, socket)) in [("192.0.2.1", &sockets[0]), ("2001:db8::1", &sockets[1])]
        .into_iter()
        .enumerate()
    {
        let route = Route {
            src_mac: config.our_mac,
            dst_mac: NS_MAC,
            src: peer.parse().unwrap(),
            dst: socket.local_addr().unwrap().ip(),
        };
        let mut queue = FrameQueue::new();
        queue.set_l4_checksum(L4Checksum::PartialUdp);
        let payload = |i: usize, len: usize| -> Vec<u8> {
            (0..len).map(|k| (k * 13 + i * 7 + family) as u8).collect()
        };
        for (i, &len) in sizes.iter().enumerate() {
            udp_frame(&mut queue, route, 53, 5000, &payload(i, len));
        }
        let before = tap.stats();
        assert_eq!(tap.write_queue(&queue), 0, "{peer}: frames refused");
        let after = tap.stats();
        if after.runs_refused {
            eprintln!("{TEST}: this kernel doesn't segment datagrams; they went one by one");
        } else {
            assert_eq!(after.runs - before.runs, 2, "{peer}: {after:?}");
            assert_eq!(after.run_frames - before.run_frames, 26, "{peer}");
            assert_eq!(after.frames - before.frames, 2, "{peer}");
        }
        let mut buf = vec![0u8; 65536];
        for (i, &len) in sizes.iter().enumerate() {
            let (n, from) = socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{peer}: datagram {i} of {}: {e}", sizes.len()));
            assert_eq!(from.ip(), route.src, "{peer}: datagram {i}");
            assert_eq!(from.port(), 53);
            assert_eq!(n, len, "{peer}: datagram {i}'s size");
            assert!(
                buf[..n] == payload(i, len)[..],
                "{peer}: datagram {i}'s bytes"
            );
        }
    }
}

/// A socket in the namespace that sends with `UDP_SEGMENT` hands the tap one frame for the
/// whole run (where the kernel takes our offer of UDP segmentation, Linux 6.2 and later),
/// which cuts back into the datagrams sent, each its own size and bytes, both families.
#[test]
fn datagrams_sent_segmented_come_as_one_frame_to_cut() {
    const TEST: &str = "datagrams_sent_segmented_come_as_one_frame_to_cut";
    let Some((sp, tap, config)) = configured_tap(TEST) else {
        return;
    };
    let nspath = sp.ns.netns_path.to_str().unwrap().to_owned();
    // The peers' addresses resolve to us without asking.
    let mac = config.our_mac.to_string();
    for peer in ["192.0.2.1", "2001:db8::1"] {
        let args = [
            "neigh",
            "replace",
            peer,
            "lladdr",
            &mac,
            "dev",
            "pasta0",
            "nud",
            "permanent",
        ];
        ip_in(&nspath, &args);
    }
    let (segment, count, last) = (1000usize, 20usize, 300usize);
    let payload: Vec<u8> = (0..segment * (count - 1) + last)
        .map(|k| (k * 13 / 7) as u8)
        .collect();
    for peer in ["192.0.2.1:4433", "[2001:db8::1]:4433"] {
        let sent = os_shim::ns::in_netns(&sp.ns.netns, || {
            let local = if peer.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = std::net::UdpSocket::bind(local).unwrap();
            s.connect(peer).unwrap();
            let size = segment as libc::c_int;
            // SAFETY: UDP_SEGMENT (103) takes an int.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_UDP,
                    103,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "UDP_SEGMENT: {}", io::Error::last_os_error());
            s.send(&payload)
        })
        .unwrap();
        assert_eq!(sent.unwrap(), payload.len(), "{peer}");
        let to_peer = |f: &[u8]| {
            let udp_at = if f.get(12..14) == Some(&[0x86, 0xdd]) {
                14 + 40
            } else {
                14 + 20
            };
            f.len() > udp_at + 8 && f[udp_at + 2..udp_at + 4] == 4433u16.to_be_bytes()
        };
        let mut buf = vec![0; 65536 + 64];
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while datagrams.len() < count {
            let Some(frame) = next_frame(&tap, &mut buf, deadline) else {
                break;
            };
            let bytes = &buf[..frame.len];
            if !to_peer(bytes) {
                continue;
            }
            match frame.udp_segment_size {
                Some(size) => {
                    assert_eq!(usize::from(size), segment, "{peer}: segment size");
                    let (mut out, mut lens) = (Vec::new(), Vec::new());
                    let n = sans_io::wire::gso::cut_udp_run(bytes, segment, &mut out, &mut lens)
                        .unwrap_or_else(|| panic!("{peer}: a run that doesn't cut"));
                    assert_eq!(n, count, "{peer}: one frame for the whole run");
                    let mut at = 0;
                    for len in lens {
                        datagrams.push(out[at..at + len].to_vec());
                        at += len;
                    }
                }
                None => datagrams.push(bytes.to_vec()),
            }
        }
        let stats = tap.stats();
        if !stats.uso_offered {
            eprintln!("{TEST}: this kernel takes no UDP segmentation from the tap");
        } else {
            assert!(stats.udp_runs_in > 0, "{peer}: {stats:?}");
        }
        assert_eq!(datagrams.len(), count, "{peer}: datagrams");
        for (i, d) in datagrams.iter().enumerate() {
            let eth = sans_io::wire::parse::ethernet(d).unwrap();
            let l4 = match sans_io::wire::parse::ipv4(eth.payload) {
                Ok(ip) => ip.payload,
                Err(_) => sans_io::wire::parse::ipv6(eth.payload).unwrap().payload,
            };
            let udp = sans_io::wire::parse::udp(l4).unwrap();
            let want = &payload[i * segment..((i + 1) * segment).min(payload.len())];
            assert!(udp.payload == want, "{peer}: datagram {i}'s bytes");
        }
    }
}
