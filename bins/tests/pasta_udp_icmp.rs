//! Real OS: UDP and ICMP echo through pasta. From inside `pasta --config-net` (as root), UDP
//! datagrams to an echo server in the lab's remote namespace come back from the address they
//! were sent to, `--dns-forward` reaches the lab's resolver (and answers appear from the
//! forwarding address), names resolve with busybox's nslookup against the lab's resolver
//! (directly and through `--dns-forward`), and busybox's `ping` reaches the remote and the
//! gateway (the host's loopback). With `-u`, a UDP server inside the namespace answers clients
//! on the remote and on the host's loopback, from the forwarded port, as root and as an
//! ordinary user. Bursts of datagrams arrive whole both ways (pasta sends runs of them to the
//! remote segmented, and writes runs to the tap for the kernel to cut apart).
//!
//! Everything runs inside the lab (see common/mod.rs).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    addr, bin, require, run_timeout, show, test_user, wait_for_file, wait_until, Lab, Need, Shape,
    TempDir, TestUser, UDP_CLIENT_PY, UDP_ECHO_PY,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(40);
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const DNS_FORWARD4: &str = "198.51.100.53";

/// The lab, with what every test here needs besides `extra`.
fn lab(extra: &[Need]) -> Option<Lab> {
    let mut needs = vec![Need::Tun, Need::Tool("python3")];
    needs.extend_from_slice(extra);
    if !require(&needs) {
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
    let Some(mut lab) = lab(&[]) else {
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

/// Counts the datagrams of a burst (`index:u32, length:u16` then a pattern of the index) on
/// each address given, until all came or a time passed; prints `GOT addr count bad`.
const BURST_SERVER_PY: &str = r#"
import socket, struct, sys, threading
ready, count, addrs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def serve(spec, socks):
    host, port = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, int(port)))
    socks.append((spec, s))
socks = []
for a in addrs:
    serve(a, socks)
open(ready, "w").close()
def count_on(spec, s):
    s.settimeout(15)
    seen, bad = set(), 0
    try:
        while len(seen) < count:
            d = s.recv(65536)
            i, n = struct.unpack("!IH", d[:6])
            if len(d) != n or d[6:] != bytes((i + k) % 251 for k in range(n - 6)):
                bad += 1
            seen.add(i)
    except socket.timeout:
        pass
    print("GOT", spec, len(seen), bad, flush=True)
ts = [threading.Thread(target=count_on, args=x) for x in socks]
[t.start() for t in ts]
[t.join() for t in ts]
"#;

/// Sends `count` datagrams to each address, most of one size and some shorter, as fast as it
/// can: a burst pasta reads several frames of at a time. The first half go one `send` each,
/// the rest of one size in runs of up to 20, each one `sendmsg` with `UDP_SEGMENT`, which
/// the tap hands pasta as one frame where the kernel takes pasta's offer of that.
const BURST_CLIENT_PY: &str = r#"
import socket, struct, sys
count, addrs = int(sys.argv[1]), sys.argv[2:]
def datagram(i):
    n = 1200 if i % 37 else 300 + i
    return struct.pack("!IH", i, n) + bytes((i + k) % 251 for k in range(n - 6))
for spec in addrs:
    host, port = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    run = []
    def send_run():
        if run:
            s.sendmsg([b"".join(run)], [(socket.SOL_UDP, 103, struct.pack("H", 1200))])
            run.clear()
    for i in range(count):
        d = datagram(i)
        if i < count // 2 or len(d) != 1200:
            send_run()
            s.send(d)
        else:
            run.append(d)
            if len(run) == 20:
                send_run()
    send_run()
print("SENT", flush=True)
"#;

/// A burst of datagrams from the namespace (which pasta sends on in runs, segmented where it
/// can: UDP_SEGMENT) reaches the remote whole: every datagram, each its own size and bytes,
/// also those the namespace sent in runs of its own, which reach pasta as one frame each
/// (pasta's log says how many it cut, unless the kernel takes no such offer).
#[test]
fn udp_burst_arrives_datagram_by_datagram() {
    let Some(mut lab) = lab(&[]) else {
        return;
    };
    let dir = TempDir::new("udp-burst");
    let (server, client) = (dir.path().join("server.py"), dir.path().join("client.py"));
    std::fs::write(&server, BURST_SERVER_PY).unwrap();
    std::fs::write(&client, BURST_CLIENT_PY).unwrap();
    let ready = dir.path().join("ready");
    let count = 400;
    let specs = [
        format!("{},9100", addr::SERVER4),
        format!("{},9100", addr::SERVER6),
    ];
    let mut args = vec![
        server.to_str().unwrap().to_owned(),
        ready.to_str().unwrap().to_owned(),
        count.to_string(),
    ];
    args.extend(specs.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd: Command = lab.remote_command("python3", &args);
    let out_path = dir.path().join("server.out");
    cmd.stdout(std::fs::File::create(&out_path).unwrap());
    lab.spawn(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "burst server didn't start"
    );
    let script = format!(
        "python3 {} {count} {} {}",
        client.display(),
        specs[0],
        specs[1]
    );
    let out = in_pasta(&lab, &["--debug"], &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SENT"),
        "{}",
        show(&out)
    );
    let summary = common::tap_summary(&out);
    eprintln!("pasta: {summary}");
    if !summary.contains("takes no UDP segmentation") {
        // Half of each burst in runs of 20 (those of one size), for each address.
        let runs = common::count_before(&summary, " UDP runs");
        assert!(runs >= 2, "no runs from the namespace: {summary}");
        assert_eq!(common::count_before(&summary, " runs cut into"), runs);
        assert_eq!(
            common::count_before(&summary, " that could not be cut dropped"),
            0,
            "{summary}"
        );
    }
    // The server reports once it has them all, or 15 s after the last came.
    let reported = || {
        std::fs::read_to_string(&out_path)
            .map(|s| s.matches("GOT").count() == specs.len())
            .unwrap_or(false)
    };
    assert!(
        wait_until(RUN_TIMEOUT, reported),
        "no report from the server"
    );
    let got = std::fs::read_to_string(&out_path).unwrap();
    for spec in &specs {
        assert!(
            got.contains(&format!("GOT {spec} {count} 0")),
            "{spec}: {got}\n{}",
            show(&out)
        );
    }
}

/// Answers each `go R` datagram with round R's burst, sent as one `sendmsg` with UDP_SEGMENT
/// (so that the datagrams reach pasta's socket back to back): `per` datagrams of `size`
/// bytes, the last shorter, each `index:u32, length:u16` then a pattern of the index; then
/// one of its own size. Each address is served on its own until `requests` came.
const BURST_REPLIER_PY: &str = r#"
import socket, struct, sys, threading
ready, requests, per, size, addrs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
def datagram(i, n):
    return struct.pack("!IH", i, n) + bytes((i + k) % 251 for k in range(n - 6))
def serve(s):
    for _ in range(requests):
        try:
            req, peer = s.recvfrom(100)
        except socket.timeout:
            return
        base = int(req.split()[1]) * (per + 1)
        run = b"".join(datagram(base + k, size if k < per - 1 else size // 3) for k in range(per))
        s.sendmsg([run], [(socket.SOL_UDP, 103, struct.pack("H", size))], 0, peer)
        s.sendto(datagram(base + per, size + 100), peer)
socks = []
for spec in addrs:
    host, port = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(30)
    socks.append(s)
open(ready, "w").close()
ts = [threading.Thread(target=serve, args=(s,)) for s in socks]
[t.start() for t in ts]
[t.join() for t in ts]
"#;

/// In the namespace: asks for `rounds` bursts on each address and checks every datagram of
/// each: its index in order, its length, its bytes. Prints `RECEIVED spec count bad`.
const BURST_RECEIVER_PY: &str = r#"
import socket, struct, sys
rounds, per, addrs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
for spec in addrs:
    host, port = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    s.settimeout(5)
    got, bad = 0, 0
    try:
        for r in range(rounds):
            s.send(b"go %d" % r)
            for k in range(per + 1):
                d = s.recv(65536)
                i, n = struct.unpack("!IH", d[:6])
                if i != r * (per + 1) + k or len(d) != n or d[6:] != bytes((i + j) % 251 for j in range(n - 6)):
                    bad += 1
                got += 1
    except socket.timeout:
        pass
    print("RECEIVED", spec, got, bad, flush=True)
"#;

/// Bursts from the remote reach the namespace datagram by datagram, in order, each its own
/// size and bytes, though pasta's sockets take each run whole (UDP_GRO) and pasta writes runs
/// of them to the tap as one frame for the kernel to cut apart (pasta's log says how many went
/// so, unless the kernel refused); as root and as an ordinary user.
#[test]
fn udp_bursts_to_the_namespace_arrive_datagram_by_datagram() {
    let Some(mut lab) = lab(&[]) else {
        return;
    };
    let dir = TempDir::new("udp-burst-in");
    {
        // The receiver inside reads its script as whoever pasta runs as.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (server, client) = (
        dir.path().join("replier.py"),
        dir.path().join("receiver.py"),
    );
    std::fs::write(&server, BURST_REPLIER_PY).unwrap();
    std::fs::write(&client, BURST_RECEIVER_PY).unwrap();
    let ready = dir.path().join("ready");
    let (rounds, per, size) = (10, 30, 1200);
    let user = test_user();
    let runs: Vec<Option<&TestUser>> = [None, Some(&user)]
        .into_iter()
        .filter(|who| who.is_none() || require(&[Need::TunForOthers]))
        .collect();
    let specs = [
        format!("{},9101", addr::SERVER4),
        format!("{},9101", addr::SERVER6),
    ];
    let mut args = vec![
        server.to_str().unwrap().to_owned(),
        ready.to_str().unwrap().to_owned(),
        (rounds * runs.len()).to_string(),
        per.to_string(),
        size.to_string(),
    ];
    args.extend(specs.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd: Command = lab.remote_command("python3", &args);
    cmd.stdout(Stdio::null());
    lab.spawn(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "burst replier didn't start"
    );
    for who in runs {
        let script = format!(
            "python3 {} {rounds} {per} {} {}",
            client.display(),
            specs[0],
            specs[1]
        );
        let pasta_args = ["--config-net", "--debug", "--", "sh", "-c", &script];
        let out = run_timeout(
            &mut lab.host_command(who, &bin("pasta"), &pasta_args),
            RUN_TIMEOUT,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let as_whom = who.map_or("root", |u| u.name.as_str());
        for spec in &specs {
            assert!(
                stdout.contains(&format!("RECEIVED {spec} {} 0", rounds * (per + 1))),
                "{spec} as {as_whom}: {}",
                show(&out)
            );
        }
        let summary = common::tap_summary(&out);
        eprintln!("pasta as {as_whom}: {summary}");
        if !summary.contains("refused") {
            let runs = common::count_before(&summary, " segmented writes");
            assert!(runs > 0, "no datagrams went to the tap in runs: {summary}");
        }
        // The remote's runs reached pasta's sockets whole (UDP_GRO), every round's.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let received = stderr
            .lines()
            .find(|l| l.contains("runs of datagrams received whole"))
            .unwrap_or_else(|| panic!("no host sockets line in pasta's log: {}", show(&out)));
        eprintln!("pasta as {as_whom}: {received}");
        let runs = common::count_before(received, " runs of datagrams received whole");
        assert!(runs >= 2 * rounds as u64, "{received}");
    }
}

#[test]
fn ping_reaches_the_remote_and_the_gateway() {
    // busybox's ping: busybox is here for the other tests anyway (iputils-ping need not be).
    let Some(lab) = lab(&[Need::Tool("sysctl"), Need::Busybox(&["ping"])]) else {
        return;
    };
    // A new namespace lets nobody open ping sockets; pasta runs as root here.
    lab.host_sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    let script = format!(
        "busybox ping -c1 -W2 {} && echo PING4_OK; busybox ping -6 -c1 -W2 {} && echo PING6_OK; \
         busybox ping -c1 -W2 {} && echo GATEWAY_OK",
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

#[test]
fn names_resolve_through_the_resolver_and_through_dns_forward() {
    let Some(mut lab) = lab(&[Need::Busybox(&["nslookup"])]) else {
        return;
    };
    let dir = TempDir::new("dns");
    lab.start_dns(&dir);
    // The host's resolver as the namespace would get it (DHCP, RDNSS), both families, and the
    // --dns-forward address; an unknown name fails.
    let script = format!(
        "busybox nslookup -type=a remote.test {dns4} && echo DIRECT4_DONE; \
         busybox nslookup -type=aaaa remote.test {dns6} && echo DIRECT6_DONE; \
         busybox nslookup -type=a remote.test {DNS_FORWARD4} && echo FORWARD_DONE; \
         busybox nslookup -type=a nowhere.test {dns4} || echo NXDOMAIN_FAILED",
        dns4 = addr::DNS4,
        dns6 = addr::DNS6,
    );
    let out = in_pasta(&lab, &["--dns-forward", DNS_FORWARD4], &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for tag in [
        "DIRECT4_DONE",
        "DIRECT6_DONE",
        "FORWARD_DONE",
        "NXDOMAIN_FAILED",
    ] {
        assert!(stdout.contains(tag), "{tag}: {}", show(&out));
    }
    let v4 = format!("Address: {}", addr::SERVER4);
    let v6 = format!("Address: {}", addr::SERVER6);
    assert_eq!(stdout.matches(&v4).count(), 2, "{}", show(&out));
    assert_eq!(stdout.matches(&v6).count(), 1, "{}", show(&out));
}

const UDP_FWD_HOST_PORT: u16 = 5000;
const UDP_FWD_GUEST_PORT: u16 = 6000;

#[test]
fn forwarded_udp_port_reaches_a_server_in_the_namespace() {
    let Some(mut lab) = lab(&[]) else {
        return;
    };
    let dir = TempDir::new("udp-in");
    {
        // The server inside writes its ready file as whoever pasta runs as.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let (server, client) = (dir.path().join("echo.py"), dir.path().join("client.py"));
    std::fs::write(&server, UDP_ECHO_PY).unwrap();
    std::fs::write(&client, UDP_CLIENT_PY).unwrap();
    let user = test_user();
    for (i, who) in [None, Some(&user)].into_iter().enumerate() {
        if who.is_some() && !require(&[Need::TunForOthers]) {
            continue;
        }
        forwarded_udp_as(&mut lab, &dir, i, who);
    }
}

fn forwarded_udp_as(lab: &mut Lab, dir: &TempDir, run: usize, who: Option<&TestUser>) {
    let ready = dir.path().join(format!("ready-{run}"));
    let spec = format!("{UDP_FWD_HOST_PORT}:{UDP_FWD_GUEST_PORT}");
    let inside = format!(
        // Bound to [::], the server takes both families.
        "exec python3 {} {} ::,{UDP_FWD_GUEST_PORT}",
        dir.path().join("echo.py").display(),
        ready.display()
    );
    let args = ["--config-net", "-u", &spec, "--", "sh", "-c", &inside];
    let mut cmd = lab.host_command(who, &bin("pasta"), &args);
    let errors = dir.path().join(format!("stderr-{run}"));
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap());
    let pid = lab.spawn_graceful(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "server in the namespace didn't start (as {:?}): {}",
        who.map(|u| &u.name),
        std::fs::read_to_string(&errors).unwrap_or_default()
    );
    let client = dir.path().join("client.py");
    let targets = |a4: &str, a6: &str| {
        [
            format!("{a4},{UDP_FWD_HOST_PORT}"),
            format!("{a6},{UDP_FWD_HOST_PORT}"),
        ]
    };
    let from_remote = targets(addr::HOST4, addr::HOST6);
    let from_loopback = targets("127.0.0.1", "::1");
    let remote_out = run_timeout(
        &mut lab.remote_command(
            "python3",
            &[client.to_str().unwrap(), &from_remote[0], &from_remote[1]],
        ),
        RUN_TIMEOUT,
    );
    let local_out = run_timeout(
        &mut lab.host_command(
            None,
            std::path::Path::new("python3"),
            &[
                client.to_str().unwrap(),
                &from_loopback[0],
                &from_loopback[1],
            ],
        ),
        RUN_TIMEOUT,
    );
    lab.stop(pid);
    for (out, specs) in [(&remote_out, &from_remote), (&local_out, &from_loopback)] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        for spec in specs.iter() {
            // Answered from the address and port the client wrote to.
            let (a, p) = spec.rsplit_once(',').unwrap();
            assert!(
                stdout.contains(&format!("OK {spec} {a} same port={p}")),
                "{spec} as {:?}: {}",
                who.map(|u| &u.name),
                show(out)
            );
        }
    }
}

/// Sends COUNT datagrams to each `addr,port`, each from a socket of its own (the way DNS
/// queries come), then CONVERSE more from one socket; counts the answers that came back the
/// same from the address and port written to. Prints `ANSWERED n`. Arguments: COUNT CONVERSE
/// SPEC...
const SHORT_EXCHANGES_PY: &str = r#"
import socket, sys
count, converse, specs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
answered = 0
def ask(s, a, p, msg):
    s.sendto(msg, (a, p))
    try:
        data, peer = s.recvfrom(1024)
        return data == msg and peer[0] == a and peer[1] == p
    except socket.timeout:
        return False
for spec in specs:
    a, p = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    for i in range(count):
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            answered += ask(s, a, int(p), b"query %d" % i)
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for i in range(converse):
            answered += ask(s, a, int(p), b"line %d" % i)
print("ANSWERED", answered, flush=True)
"#;

/// Short exchanges with a server inside, each from a new source port (a DNS server's load),
/// are answered from the forwarded port through its own socket: pasta opens no socket for
/// any of them (the kernel walks every socket bound to a port to bind another there). An
/// exchange that becomes a conversation gets one, and is answered from the same port.
#[test]
fn short_exchanges_on_a_forwarded_port_take_no_socket_each() {
    let Some(mut lab) = lab(&[Need::Tool("ss")]) else {
        return;
    };
    let dir = TempDir::new("udp-short");
    let (server, client) = (dir.path().join("echo.py"), dir.path().join("client.py"));
    std::fs::write(&server, UDP_ECHO_PY).unwrap();
    std::fs::write(&client, SHORT_EXCHANGES_PY).unwrap();
    let ready = dir.path().join("ready");
    let spec = format!("{UDP_FWD_HOST_PORT}:{UDP_FWD_GUEST_PORT}");
    let inside = format!(
        "exec python3 {} {} ::,{UDP_FWD_GUEST_PORT}",
        server.display(),
        ready.display()
    );
    let args = ["--config-net", "-u", &spec, "--", "sh", "-c", &inside];
    let mut cmd = lab.host_command(None, &bin("pasta"), &args);
    let errors = dir.path().join("stderr");
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap());
    let pid = lab.spawn_graceful(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "server in the namespace didn't start: {}",
        std::fs::read_to_string(&errors).unwrap_or_default()
    );
    let bound_to_port = |lab: &Lab| -> usize {
        let out = lab.host_sh(&format!("ss -Huan 'sport = :{UDP_FWD_HOST_PORT}'"));
        out.lines().filter(|l| !l.trim().is_empty()).count()
    };
    let listeners = bound_to_port(&lab);
    let targets = [
        format!("{},{UDP_FWD_HOST_PORT}", addr::HOST4),
        format!("{},{UDP_FWD_HOST_PORT}", addr::HOST6),
    ];
    const COUNT: usize = 40;
    let out = run_timeout(
        &mut lab.remote_command(
            "python3",
            &[
                client.to_str().unwrap(),
                &COUNT.to_string(),
                "0",
                &targets[0],
                &targets[1],
            ],
        ),
        RUN_TIMEOUT,
    );
    let answered = format!("ANSWERED {}", 2 * COUNT);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&answered),
        "{}",
        show(&out)
    );
    assert_eq!(
        bound_to_port(&lab),
        listeners,
        "a socket for a short exchange"
    );

    // Six exchanges from one port, IPv4 then IPv6: two conversations, a socket each.
    let out = run_timeout(
        &mut lab.remote_command(
            "python3",
            &[client.to_str().unwrap(), "0", "6", &targets[0], &targets[1]],
        ),
        RUN_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ANSWERED 12"),
        "{}",
        show(&out)
    );
    assert_eq!(bound_to_port(&lab), listeners + 2);
    lab.stop(pid);
}
