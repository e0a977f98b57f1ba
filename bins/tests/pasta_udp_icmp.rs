//! Real OS: UDP and ICMP echo through pasta. From inside `pasta --config-net` (as root), UDP
//! datagrams to an echo server in the lab's remote namespace come back from the address they
//! were sent to, `--dns-forward` reaches the lab's resolver (and answers appear from the
//! forwarding address), and `ping` reaches the remote and the gateway (the host's loopback).
//!
//! Everything runs inside the lab (see common/mod.rs).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{addr, bin, have_tool, run_timeout, wait_for_file, Lab, Shape, TempDir};

const RUN_TIMEOUT: Duration = Duration::from_secs(40);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const DNS_FORWARD4: &str = "198.51.100.53";

/// A UDP echo server on each address given (`addr port` pairs), then a ready file.
const UDP_ECHO_PY: &str = r#"
import select, socket, sys
ready = sys.argv[1]
socks = []
for spec in sys.argv[2:]:
    a, p = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a, int(p)))
    socks.append(s)
open(ready, "w").close()
while True:
    r, _, _ = select.select(socks, [], [], 60)
    if not r:
        break
    for s in r:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)
"#;

/// Sends one datagram to each `addr,port` and prints `OK addr,port source` per reply.
const UDP_CLIENT_PY: &str = r#"
import socket, sys
for spec in sys.argv[1:]:
    a, p = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    msg = ("hello " + spec).encode()
    s.sendto(msg, (a, int(p)))
    try:
        data, peer = s.recvfrom(65535)
        print("OK", spec, peer[0], "same" if data == msg else "different", flush=True)
    except socket.timeout:
        print("TIMEOUT", spec, flush=True)
"#;

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lab() -> Option<Lab> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("/dev/net/tun is missing under CI");
        }
        eprintln!("\n*** SKIPPED: needs /dev/net/tun ***\n");
        return None;
    }
    if !["python3", "ping"].iter().all(|t| have_tool(t)) {
        return None;
    }
    let lab = Lab::new(Shape::DualStack)?;
    lab.add_remote_servers();
    Some(lab)
}

fn in_pasta(lab: &Lab, extra: &[&str], script: &str) -> Output {
    let mut args = vec!["--config-net"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    run_timeout(
        &mut lab.host_command(None, &bin("pasta"), &args),
        RUN_TIMEOUT,
    )
}

#[test]
fn udp_echo_and_dns_forward_through_pasta() {
    let Some(mut lab) = lab() else {
        return;
    };
    // The lab's resolver, in the remote namespace.
    lab.remote_sh(&format!("ip addr add {}/32 dev lo", addr::DNS4));
    let dir = TempDir::new("udp");
    let (server, client) = (dir.path().join("echo.py"), dir.path().join("client.py"));
    std::fs::write(&server, UDP_ECHO_PY).unwrap();
    std::fs::write(&client, UDP_CLIENT_PY).unwrap();
    let ready = dir.path().join("ready");
    let mut cmd: Command = lab.remote_command(
        "python3",
        &[
            server.to_str().unwrap(),
            ready.to_str().unwrap(),
            &format!("{},7", addr::SERVER4),
            &format!("{},7", addr::SERVER6),
            &format!("{},53", addr::DNS4),
        ],
    );
    cmd.stdout(Stdio::null());
    lab.spawn(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "echo server didn't start"
    );
    let script = format!(
        "python3 {} {},7 {},7 {DNS_FORWARD4},53",
        client.display(),
        addr::SERVER4,
        addr::SERVER6
    );
    let out = in_pasta(&lab, &["--dns-forward", DNS_FORWARD4], &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (spec, from) in [
        (format!("{},7", addr::SERVER4), addr::SERVER4),
        (format!("{},7", addr::SERVER6), addr::SERVER6),
        // Answered by the resolver, seen from the forwarding address.
        (format!("{DNS_FORWARD4},53"), DNS_FORWARD4),
    ] {
        assert!(
            stdout.contains(&format!("OK {spec} {from} same")),
            "{spec}: {}",
            show(&out)
        );
    }
}

#[test]
fn ping_reaches_the_remote_and_the_gateway() {
    let Some(lab) = lab() else {
        return;
    };
    // A new namespace lets nobody open ping sockets; pasta runs as root here.
    lab.host_sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    let script = format!(
        "ping -c1 -W2 {} && echo PING4_OK; ping -6 -c1 -W2 {} && echo PING6_OK; \
         ping -c1 -W2 {} && echo GATEWAY_OK",
        addr::SERVER4,
        addr::SERVER6,
        addr::REMOTE4
    );
    let out = in_pasta(&lab, &[], &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for tag in ["PING4_OK", "PING6_OK", "GATEWAY_OK"] {
        assert!(stdout.contains(tag), "{tag}: {}", show(&out));
    }
}
