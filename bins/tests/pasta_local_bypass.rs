//! Real OS: local traffic takes the loopback bypass, not the tap (the man page's "Handling of
//! local traffic"). A `-t` connection from the host's loopback reaches the server inside from
//! the namespace's own address (through the tap it would come from the gateway), 10 MiB
//! byte-exact both ways, IPv4 and IPv6; with `--host-lo-to-ns-lo` a server bound to the
//! namespace's loopback only is reached, from a loopback peer; `--no-splice` sends it through
//! the tap. `-u` datagrams do the same. `-T ADDR/PORT` listens on that address only.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    addr, bin, random_file, require, show, test_user, wait_for_file, Lab, Need, Shape, TempDir,
    TestUser, UDP_CLIENT_PY,
};

const TCP_PORT: u16 = 9400;
const UDP_PORT: u16 = 9401;
const NS_ONLY_PORT: u16 = 9402;
const HOST_PORT: u16 = 9403;
const BLOB_LEN: usize = 10 << 20;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Servers for the namespace: TCP echo on each `tcp,ADDR,PORT`, UDP echo on each
/// `udp,ADDR,PORT` ("::" takes IPv4 too); each peer is appended to the log as `PROTO ADDR`.
/// Then the ready file. Arguments: READY LOG SPEC...
const PEER_ECHO_PY: &str = r#"
import socket, sys, threading
ready, log = sys.argv[1], sys.argv[2]
lock = threading.Lock()
def note(proto, peer):
    a = peer[0]
    if a.startswith("::ffff:"):
        a = a[7:]
    with lock, open(log, "a") as f:
        f.write("%s %s\n" % (proto, a))
def echo(c):
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    c.close()
def serve_tcp(s):
    while True:
        c, peer = s.accept()
        note("tcp", peer)
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def serve_udp(s):
    while True:
        d, peer = s.recvfrom(65535)
        note("udp", peer)
        s.sendto(d, peer)
for spec in sys.argv[3:]:
    proto, a, p = spec.split(",")
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if a == "::" else 1)
    s.bind((a, int(p)))
    if proto == "tcp":
        s.listen(16)
    threading.Thread(target=serve_tcp if proto == "tcp" else serve_udp, args=(s,), daemon=True).start()
open(ready, "w").close()
threading.Event().wait(120)
"#;

/// Sends FILE to ADDR PORT over TCP while reading the echo; prints the echo's SHA-256, or
/// `ERROR why`. Arguments: ADDR PORT FILE.
const STREAM_CLIENT_PY: &str = r#"
import hashlib, socket, sys, threading
a, p, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    c = socket.create_connection((a, p), timeout=20)
    def send():
        with open(path, "rb") as f:
            c.sendall(f.read())
        c.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send)
    t.start()
    h = hashlib.sha256()
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        h.update(d)
    t.join()
    print(h.hexdigest(), flush=True)
except OSError as e:
    print("ERROR", e, flush=True)
"#;

struct Setup {
    lab: Lab,
    dir: TempDir,
    sha: String,
}

fn setup() -> Option<Setup> {
    if !require(&[Need::Tun, Need::Tool("python3")]) {
        return None;
    }
    let lab = Lab::new(Shape::DualStack)?;
    let dir = TempDir::new("bypass");
    let sha = random_file(&dir.path().join("blob"), BLOB_LEN);
    for (name, text) in [
        ("echo.py", PEER_ECHO_PY),
        ("client.py", STREAM_CLIENT_PY),
        ("udp_client.py", UDP_CLIENT_PY),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    Some(Setup { lab, dir, sha })
}

/// Runs pasta with `opts`, its command the echo servers on `specs`; returns the pasta's PID
/// once they serve.
fn start(s: &mut Setup, opts: &[&str], specs: &[String]) -> u32 {
    start_as(s, None, opts, specs)
}

/// [`start`], as `who` (root if `None`).
fn start_as(s: &mut Setup, who: Option<&TestUser>, opts: &[&str], specs: &[String]) -> u32 {
    let d = s.dir.path();
    let ready = d.join("ready");
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(d.join("peers"));
    let echo = d.join("echo.py");
    let mut args: Vec<String> = ["--config-net", "--debug"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(opts.iter().map(|a| a.to_string()));
    args.push("--".into());
    args.extend(
        [
            "python3",
            echo.to_str().unwrap(),
            ready.to_str().unwrap(),
            d.join("peers").to_str().unwrap(),
        ]
        .map(String::from),
    );
    args.extend(specs.iter().cloned());
    let mut cmd = s.lab.host_command(who, &bin("pasta"), &args);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("pasta.log")).unwrap());
    let pid = s.lab.spawn_graceful(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "the servers in pasta's namespace didn't start: {}",
        pasta_log(d)
    );
    pid
}

fn pasta_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("pasta.log")).unwrap_or_default()
}

/// The peers the namespace's servers logged, as `PROTO ADDR` lines.
fn peers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("peers"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// A 10 MiB round trip from the lab's host namespace to `addr` `port`; the echo's SHA-256.
fn round_trip(s: &Setup, addr: &str, port: u16) -> String {
    let d = s.dir.path();
    let out = s.lab.host_sh(&format!(
        "python3 {} {addr} {port} {}",
        d.join("client.py").display(),
        d.join("blob").display()
    ));
    out.trim().to_string()
}

fn tcp(a: &str, p: u16) -> String {
    format!("tcp,{a},{p}")
}

#[test]
fn host_loopback_connections_are_spliced_from_the_namespaces_own_address() {
    // Also as an ordinary user, whose pasta makes its namespace sockets from a thread there.
    if !require(&[Need::TunForOthers]) {
        return;
    }
    let Some(mut s) = setup() else {
        return;
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(s.dir.path(), open).unwrap();
    }
    let user = test_user();
    for who in [None, Some(&user)] {
        let pasta = start_as(
            &mut s,
            who,
            &["-t", &TCP_PORT.to_string()],
            &[tcp("::", TCP_PORT)],
        );
        for lo in ["127.0.0.1", "::1"] {
            let sha = round_trip(&s, lo, TCP_PORT);
            assert_eq!(sha, s.sha, "{lo} ({who:?}): {}", pasta_log(s.dir.path()));
        }
        assert_eq!(
            peers(s.dir.path()),
            [
                format!("tcp {}", addr::HOST4),
                format!("tcp {}", addr::HOST6)
            ],
            "the server sees the namespace's own addresses: spliced, not through the tap"
        );
        s.lab.stop(pasta);
    }
}

#[test]
fn host_lo_to_ns_lo_reaches_a_server_on_the_namespaces_loopback_only() {
    let Some(mut s) = setup() else {
        return;
    };
    let port = TCP_PORT.to_string();
    let pasta = start(
        &mut s,
        &["-t", &port, "--host-lo-to-ns-lo"],
        &[tcp("127.0.0.1", TCP_PORT), tcp("::1", TCP_PORT)],
    );
    for lo in ["127.0.0.1", "::1"] {
        let sha = round_trip(&s, lo, TCP_PORT);
        assert_eq!(sha, s.sha, "{lo}: {}", pasta_log(s.dir.path()));
    }
    assert_eq!(peers(s.dir.path()), ["tcp 127.0.0.1", "tcp ::1"]);
    s.lab.stop(pasta);

    // Without it, a server on the namespace's loopback only is not exposed to the host.
    let pasta = start(&mut s, &["-t", &port], &[tcp("127.0.0.1", TCP_PORT)]);
    let out = round_trip(&s, "127.0.0.1", TCP_PORT);
    assert_ne!(
        out, s.sha,
        "reached the namespace's loopback without the option"
    );
    assert!(peers(s.dir.path()).is_empty());
    s.lab.stop(pasta);
}

#[test]
fn no_splice_sends_host_loopback_connections_through_the_tap() {
    let Some(mut s) = setup() else {
        return;
    };
    let pasta = start(
        &mut s,
        &["-t", &TCP_PORT.to_string(), "--no-splice"],
        &[tcp("::", TCP_PORT)],
    );
    let sha = round_trip(&s, "127.0.0.1", TCP_PORT);
    assert_eq!(sha, s.sha, "{}", pasta_log(s.dir.path()));
    let seen = peers(s.dir.path());
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Through the tap, the host's loopback appears as the gateway (--map-host-loopback).
    assert_eq!(seen[0], format!("tcp {}", addr::REMOTE4), "{seen:?}");
    s.lab.stop(pasta);
}

#[test]
fn host_loopback_datagrams_are_relayed_from_the_namespaces_own_address() {
    let Some(mut s) = setup() else {
        return;
    };
    let specs = [format!("udp,::,{UDP_PORT}")];
    let udp_client = |s: &Setup| {
        let d = s.dir.path();
        s.lab.host_sh(&format!(
            "python3 {} 127.0.0.1,{UDP_PORT} ::1,{UDP_PORT}",
            d.join("udp_client.py").display()
        ))
    };
    let pasta = start(&mut s, &["-u", &UDP_PORT.to_string()], &specs);
    let out = udp_client(&s);
    // The answers come back from the address and port the client wrote to.
    for want in [
        format!("OK 127.0.0.1,{UDP_PORT} 127.0.0.1 same port={UDP_PORT}"),
        format!("OK ::1,{UDP_PORT} ::1 same port={UDP_PORT}"),
    ] {
        assert!(out.contains(&want), "{out}\n{}", pasta_log(s.dir.path()));
    }
    assert_eq!(
        peers(s.dir.path()),
        [
            format!("udp {}", addr::HOST4),
            format!("udp {}", addr::HOST6)
        ]
    );
    s.lab.stop(pasta);

    // --no-splice: through the tap, from the gateway.
    let pasta = start(
        &mut s,
        &["-u", &UDP_PORT.to_string(), "--no-splice"],
        &specs,
    );
    let out = udp_client(&s);
    assert!(
        out.contains(&format!("OK 127.0.0.1,{UDP_PORT} 127.0.0.1 same")),
        "{out}"
    );
    assert_eq!(peers(s.dir.path())[0], format!("udp {}", addr::REMOTE4));
    s.lab.stop(pasta);
}

#[test]
fn a_host_loopback_datagram_larger_than_the_mtu_is_relayed_whole() {
    // The bypass doesn't go through the tap, so the MTU doesn't bound it: the first datagram
    // of a flow (read by the forwarding listener, not the flow's own socket) and the next
    // ones arrive whole.
    let Some(mut s) = setup() else {
        return;
    };
    let specs = [format!("udp,::,{UDP_PORT}")];
    let pasta = start(
        &mut s,
        &["-u", &UDP_PORT.to_string(), "--mtu", "1500"],
        &specs,
    );
    let d = s.dir.path();
    for (a, size) in [("127.0.0.1", 4000), ("::1", 9000), ("127.0.0.1", 60000)] {
        let spec = format!("{a},{UDP_PORT},{size}");
        let client = d.join("udp_client.py");
        // Twice from one socket would need a longer client; two clients are two flows.
        let out = s
            .lab
            .host_sh(&format!("python3 {} {spec} {spec}", client.display()));
        let want = format!("OK {spec} {a} same port={UDP_PORT}");
        assert_eq!(out.matches(&want).count(), 2, "{out}\n{}", pasta_log(d));
    }
    s.lab.stop(pasta);
}

#[test]
fn tcp_ns_with_an_address_listens_on_that_address_only() {
    let Some(mut s) = setup() else {
        return;
    };
    // The host's server, on its loopback.
    let d = s.dir.path().to_path_buf();
    let host_ready = d.join("host-ready");
    let mut server = Command::new("ip");
    server
        .args(["netns", "exec", &s.lab.host, "python3"])
        .arg(d.join("echo.py"))
        .arg(&host_ready)
        .arg(d.join("host-peers"))
        .arg(tcp("::", HOST_PORT))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    s.lab.spawn(server);
    assert!(wait_for_file(&host_ready, READY_TIMEOUT));
    let spec = format!("127.0.0.1/{NS_ONLY_PORT}:{HOST_PORT}");
    let client = d.join("client.py");
    let blob = d.join("blob");
    let script = format!(
        "python3 {c} 127.0.0.1 {NS_ONLY_PORT} {b}; python3 {c} ::1 {NS_ONLY_PORT} {b}",
        c = client.display(),
        b = blob.display()
    );
    let out = s.lab.run(
        None,
        &bin("pasta"),
        &["--config-net", "-T", &spec, "--", "sh", "-c", &script],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(s.sha.as_str()),
        "{}",
        show(&out)
    );
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("ERROR")),
        "::1 must not listen: {}",
        show(&out)
    );
}
