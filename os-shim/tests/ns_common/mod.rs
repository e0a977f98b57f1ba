//! Shared by the `ns_*` tests: prerequisites and skips, bounded waits, a hand-built pasta
//! configuration.
//!
//! Tests that lack a prerequisite (root, user namespaces, an accessible /dev/net/tun, a tool)
//! print a loud `*** SKIPPED: needs ... ***` and pass, except with CI=true, where they fail:
//! [`require`], shared with bins/tests.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use os_shim::ns::{self, NsError, Spawned};
use sans_io::config::derive::derive;
use sans_io::config::host::{scope, HostAddr, HostLink, HostNet, HostRoute, NextHop};
use sans_io::config::resolv::ResolvConf;
use sans_io::config::{Config, GuestRoute, Mode, NetOptions};
use sans_io::wire::MacAddr;

// The same prerequisite check as the real-OS tests of bins/ (one file, shared by path: test
// helpers are not a crate of their own).
#[path = "../../../bins/tests/common/prereq.rs"]
mod prereq;
#[allow(unused_imports)] // Each test binary uses its own part.
pub use prereq::{is_root, require, skip_because, Need};

/// `spawn`, or `None` (after [`skip_because`]) when this kernel or sandbox has no user namespaces
/// for us.
pub fn spawn_or_skip(test: &str, command: &[&str], netns_only: bool) -> Option<Spawned> {
    let command: Vec<OsString> = command.iter().map(OsString::from).collect();
    match ns::spawn(&command, netns_only) {
        Ok(s) => Some(s),
        Err(e @ NsError::Setup { .. }) => {
            skip_because(&format!("cannot create namespaces here: {e}"));
            None
        }
        Err(e) => panic!("{test}: spawn: {e}"),
    }
}

/// A fresh path in the temporary directory.
pub fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "os-shim-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs `cmd` to completion within `timeout`, killing it (by PID) past that.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Read both pipes on threads, so that a chatty child can't block on them.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, timeout)
        .unwrap_or_else(|| panic!("{cmd:?}: still running after {timeout:?}, killed"));
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Waits for `child` at most `timeout`; past that kills it by PID, reaps it and returns None.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ip ARGS` inside the network namespace at `netns_path` (nsenter; needs root).
pub fn ip_in(netns_path: &str, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new("nsenter")
            .arg(format!("--net={netns_path}"))
            .arg("ip")
            .args(args),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn readlink(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(dst: &str, len: u8, gw: Option<&str>, priority: u32, link_scope: bool) -> HostRoute {
    HostRoute {
        dst: ip(dst),
        dst_len: len,
        nexthops: vec![NextHop {
            gateway: gw.map(ip),
            oif: Some(2),
        }],
        priority,
        protocol: 3,
        scope: if link_scope {
            scope::LINK
        } else {
            scope::UNIVERSE
        },
        kind: 1,
        pref_src: None,
        mtu: None,
    }
}

/// The MAC address `--ns-mac-addr` sets in [`test_config`].
pub const NS_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc]);
/// The route of [`test_config`] whose gateway nothing reaches.
pub const BAD_ROUTE: &str = "100.64.0.0/10 via 198.18.0.1";

/// A pasta configuration derived from a hand-built host (eth0: 192.0.2.10/24,
/// 2001:db8::10/64, gateways 192.0.2.1 and fe80::1, a few more routes), with the tap called
/// `ifname`, the MAC [`NS_MAC`] and, appended, a route the kernel must refuse
/// ([`BAD_ROUTE`]). Its IPv4 routes are ordered so that the one through 198.51.100.1 comes
/// before the route that makes that gateway reachable.
pub fn test_config(ifname: &str) -> Config {
    let host = HostNet {
        links: vec![
            HostLink {
                index: 1,
                name: "lo".into(),
                mac: Some(MacAddr([0; 6])),
                mtu: 65536,
                up: true,
                loopback: true,
            },
            HostLink {
                index: 2,
                name: "eth0".into(),
                mac: Some(MacAddr([0x02, 0, 0, 0, 0, 0x10])),
                mtu: 1500,
                up: true,
                loopback: false,
            },
        ],
        addrs: vec![
            HostAddr {
                ifindex: 2,
                addr: ip("192.0.2.10"),
                prefix_len: 24,
                scope: scope::UNIVERSE,
                flags: 0x80,
            },
            HostAddr {
                ifindex: 2,
                addr: ip("2001:db8::10"),
                prefix_len: 64,
                scope: scope::UNIVERSE,
                flags: 0x80,
            },
            HostAddr {
                ifindex: 2,
                addr: ip("fe80::10"),
                prefix_len: 64,
                scope: scope::LINK,
                flags: 0x80,
            },
        ],
        routes: vec![
            route("0.0.0.0", 0, Some("192.0.2.1"), 0, false),
            route("198.51.100.0", 24, None, 0, true),
            route("203.0.113.0", 24, Some("198.51.100.1"), 0, false),
            route("::", 0, Some("fe80::1"), 1024, false),
            route("2001:db8:5::", 48, Some("2001:db8::1"), 50, false),
        ],
    };
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.ns_ifname = Some(ifname.to_owned());
    opts.ns_mac = Some(NS_MAC);
    let derived =
        derive(&opts, &host, &ResolvConf::parse("nameserver 192.0.2.53\n")).expect("derive");
    let mut config = derived.config;
    assert_eq!(config.mtu, Some(65520));
    let ip4 = config.ip4.as_mut().expect("IPv4");
    // Gateway routes before the on-link route their gateway needs: only a retry gets them in.
    ip4.guest_routes.sort_by_key(|r| r.gateway.is_none());
    ip4.guest_routes.push(GuestRoute {
        dst: ip("100.64.0.0"),
        dst_len: 10,
        gateway: Some(ip("198.18.0.1")),
        priority: 0,
        mtu: None,
    });
    config
}
