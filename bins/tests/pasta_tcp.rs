//! Real OS: TCP through pasta, both ways. The namespace's connections to remote servers go
//! through the tap device, the engine and host sockets; `-t` forwards host ports to a server
//! in the namespace. Transfers are checked byte for byte (SHA-256 of a 10 MiB random file),
//! refusals must be quick, and iperf3 runs each way (its bitrates are printed, not asserted).
//!
//! Everything runs inside the lab (see common/mod.rs): pasta in the lab's host namespace,
//! servers in the remote namespace on addresses of the lab's own ([`addr::SERVER4`],
//! [`addr::SERVER6`]) or inside pasta's namespace.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    addr, bin, pcap, random_file, require, run_timeout, sha256_file, show, test_user,
    wait_for_file, Lab, Need, Shape, TempDir, FILE_SERVER_PY,
};

const BLOB_LEN: usize = 10 << 20;
const HTTP_PORT: u16 = 8000;
const CLOSED_PORT: u16 = 8001;
const FORWARDED_PORT: u16 = 8080;
const IPERF_PORT: u16 = 5201;
const IPERF_FORWARDED_PORT: u16 = 5202;
const SINK_PORT: u16 = 8002;
/// Bound for a whole pasta run doing transfers.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for a server to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The lab, or `None` (after saying why) when /dev/net/tun or one of `tools` is missing.
fn lab_with(tools: &[&'static str]) -> Option<Lab> {
    let mut needs = vec![Need::Tun];
    needs.extend(tools.iter().map(|&t| Need::Tool(t)));
    if !require(&needs) {
        return None;
    }
    let lab = Lab::new(Shape::DualStack)?;
    lab.add_remote_servers();
    Some(lab)
}

/// Servers' chatter (iperf3's reports) stays out of the test output; errors don't.
fn quiet(mut cmd: Command) -> Command {
    cmd.stdout(Stdio::null());
    cmd
}

/// `pasta --config-net [extra] -- sh -c script` in the lab's host namespace, bounded.
fn in_pasta(lab: &Lab, extra: &[&str], script: &str, timeout: Duration) -> Output {
    let mut args = vec!["--config-net"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    run_timeout(&mut lab.host_command(None, &bin("pasta"), &args), timeout)
}

/// A directory holding a random 10 MiB `blob` and the file server script; its digest.
fn files() -> (TempDir, String) {
    let dir = TempDir::new("tcp");
    let sha = random_file(&dir.path().join("blob"), BLOB_LEN);
    std::fs::write(dir.path().join("server.py"), FILE_SERVER_PY).unwrap();
    (dir, sha)
}

/// Starts the file server for `dir` in the remote namespace.
fn serve_remotely(lab: &mut Lab, dir: &Path) {
    let ready = dir.join("remote-ready");
    let server = dir.join("server.py");
    let cmd = lab.remote_command(
        "python3",
        &[
            server.to_str().unwrap(),
            dir.to_str().unwrap(),
            &HTTP_PORT.to_string(),
            ready.to_str().unwrap(),
        ],
    );
    lab.spawn(quiet(cmd));
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "the remote file server didn't start"
    );
}

#[test]
fn fetches_a_file_from_the_remote_over_ipv4_and_ipv6() {
    let Some(mut lab) = lab_with(&["python3", "curl", "sha256sum"]) else {
        return;
    };
    let (dir, sha) = files();
    serve_remotely(&mut lab, dir.path());
    let script = format!(
        "curl -sS --max-time 25 http://{}:{HTTP_PORT}/blob | sha256sum; \
         curl -sS --max-time 25 'http://[{}]:{HTTP_PORT}/blob' | sha256sum",
        addr::SERVER4,
        addr::SERVER6
    );
    // As root, and as an ordinary user (rootless Podman's case: pasta in a user namespace).
    let user = test_user();
    for who in [None, Some(&user)] {
        if who.is_some() && !require(&[Need::TunForOthers]) {
            continue;
        }
        let args = ["--config-net", "--", "sh", "-c", &script];
        let out = run_timeout(
            &mut lab.host_command(who, &bin("pasta"), &args),
            RUN_TIMEOUT,
        );
        assert!(out.status.success(), "{}", show(&out));
        let digests: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            digests,
            [sha.clone(), sha.clone()],
            "as {:?}: copies differ (IPv4, IPv6)\n{}",
            who.map(|u| &u.name),
            show(&out)
        );
    }
}

/// The transport checksums of a pcap's TCP and UDP frames: (valid, invalid) per direction,
/// (from the guest, to the guest), told apart by `ours`, the source MAC of our frames.
fn checksum_census(file: &[u8], ours: [u8; 6]) -> [(usize, usize); 2] {
    use sans_io::wire::checksum;
    let mut census = [(0, 0); 2];
    for frame in pcap::frames(file) {
        let (src, dst, proto, l4): (std::net::IpAddr, std::net::IpAddr, u8, &[u8]) =
            match u16::from_be_bytes([frame[12], frame[13]]) {
                0x0800 => {
                    let ip = &frame[14..];
                    let ihl = usize::from(ip[0] & 0x0f) * 4;
                    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                    let a = |o: usize| -> [u8; 4] { ip[o..o + 4].try_into().unwrap() };
                    (a(12).into(), a(16).into(), ip[9], &ip[ihl..total])
                }
                0x86dd => {
                    let ip = &frame[14..];
                    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                    let a = |o: usize| -> [u8; 16] { ip[o..o + 16].try_into().unwrap() };
                    (a(8).into(), a(24).into(), ip[6], &ip[40..40 + plen])
                }
                _ => continue,
            };
        if proto != 6 && proto != 17 {
            continue;
        }
        let sum = checksum::finish(checksum::add(
            checksum::pseudo_header(src, dst, proto, l4.len() as u32),
            l4,
        ));
        let side = usize::from(frame[6..12] == ours);
        if sum == 0 {
            census[side].0 += 1;
        } else {
            census[side].1 += 1;
        }
    }
    census
}

/// Takes one connection per address given, reads it to its end and prints `SINK addr sha256
/// bytes`; a ready file once listening.
const SINK_PY: &str = r#"
import hashlib, socket, sys, threading
ready, addrs = sys.argv[1], sys.argv[2:]
def serve(s, spec):
    c, _ = s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    print("SINK", spec, h.hexdigest(), n, flush=True)
ts = []
for spec in addrs:
    host, port = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(1)
    ts.append(threading.Thread(target=serve, args=(s, spec)))
open(ready, "w").close()
[t.start() for t in ts]
[t.join() for t in ts]
"#;

/// At a 1500-byte MTU segments go whole both ways: the namespace's kernel hands pasta TCP
/// segments of up to 64 KiB (its segmentation offload, which pasta's tap offers), and pasta
/// writes runs of segments to the tap as one frame for the kernel to cut. 10 MiB each way
/// and family arrive intact, and pasta's log counts both.
#[test]
fn at_a_small_mtu_segments_go_whole_both_ways() {
    let Some(mut lab) = lab_with(&["python3", "curl", "sha256sum"]) else {
        return;
    };
    let (dir, sha) = files();
    serve_remotely(&mut lab, dir.path());
    let (sink, ready) = (dir.path().join("sink.py"), dir.path().join("sink-ready"));
    std::fs::write(&sink, SINK_PY).unwrap();
    let out_path = dir.path().join("sink.out");
    let specs = [
        format!("{},{SINK_PORT}", addr::SERVER4),
        format!("{},{SINK_PORT}", addr::SERVER6),
    ];
    let mut cmd = lab.remote_command(
        "python3",
        &[
            sink.to_str().unwrap(),
            ready.to_str().unwrap(),
            &specs[0],
            &specs[1],
        ],
    );
    cmd.stdout(std::fs::File::create(&out_path).unwrap());
    lab.spawn(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "the sink didn't start"
    );
    let blob = dir.path().join("blob");
    let send = |host: &str| {
        format!(
            "python3 -c 'import socket, sys; c = socket.create_connection((sys.argv[1], {SINK_PORT})); \
             c.sendall(open(sys.argv[2], \"rb\").read()); c.close()' {host} {}",
            blob.display()
        )
    };
    let fetch = format!(
        "curl -sS --max-time 25 http://{}:{HTTP_PORT}/blob | sha256sum; \
         curl -sS --max-time 25 'http://[{}]:{HTTP_PORT}/blob' | sha256sum",
        addr::SERVER4,
        addr::SERVER6
    );
    let script = format!(
        "{} && {} && {fetch}",
        send(addr::SERVER4),
        send(addr::SERVER6)
    );
    let out = in_pasta(&lab, &["-m", "1500", "--debug"], &script, RUN_TIMEOUT);
    assert!(out.status.success(), "{}", show(&out));
    let fetched = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        fetched.matches(&sha).count(),
        2,
        "downloads at a 1500-byte MTU: {}",
        show(&out)
    );
    let done = || {
        std::fs::read_to_string(&out_path)
            .map(|s| s.matches("SINK").count() == specs.len())
            .unwrap_or(false)
    };
    assert!(
        common::wait_until(RUN_TIMEOUT, done),
        "the sink didn't report"
    );
    let got = std::fs::read_to_string(&out_path).unwrap();
    for spec in &specs {
        assert!(
            got.contains(&format!("SINK {spec} {sha} {BLOB_LEN}")),
            "{spec}: {got}\n{}",
            show(&out)
        );
    }
    let summary = common::tap_summary(&out);
    eprintln!("pasta: {summary}");
    let whole = common::count_before(&summary, " TCP segments read whole");
    assert!(
        whole > 0,
        "the namespace segmented everything itself: {summary}"
    );
    let runs = common::count_before(&summary, " segmented writes");
    assert!(runs > 0, "no segments went to the tap in runs: {summary}");
}

#[test]
fn a_capture_holds_valid_checksums_both_ways() {
    // What --pcap records is what crossed the tap, with valid TCP and UDP checksums both ways
    // (frames built with partial checksums, for a link that finishes them, are recorded
    // finished: see wire::offload).
    let Some(mut lab) = lab_with(&["python3", "curl", "sha256sum"]) else {
        return;
    };
    let (dir, sha) = files();
    serve_remotely(&mut lab, dir.path());
    let file = dir.path().join("run.pcap");
    let script = format!(
        "curl -sS --max-time 25 -r 0-999999 http://{}:{HTTP_PORT}/blob | sha256sum; \
         curl -sS --max-time 25 'http://[{}]:{HTTP_PORT}/blob' | sha256sum",
        addr::SERVER4,
        addr::SERVER6
    );
    let out = in_pasta(
        &lab,
        &["--pcap", file.to_str().unwrap()],
        &script,
        RUN_TIMEOUT,
    );
    assert!(out.status.success(), "{}", show(&out));
    // The IPv6 copy is whole: the data arrived intact through partial checksums.
    let digests = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        digests
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next()),
        Some(sha.as_str()),
        "{}",
        show(&out)
    );
    let ours = pcap::OUR_MAC;
    let [(guest_ok, guest_bad), (ours_ok, ours_bad)] =
        checksum_census(&std::fs::read(&file).unwrap(), ours);
    assert_eq!((guest_bad, ours_bad), (0, 0), "frames with bad checksums");
    // A MiB and more went to the guest: hundreds of frames at the namespace's MTU at least.
    assert!(
        ours_ok > 100 && guest_ok > 20,
        "{ours_ok} to the guest, {guest_ok} from it"
    );
}

#[test]
fn a_closed_remote_port_is_refused_quickly() {
    let Some(lab) = lab_with(&["curl"]) else {
        return;
    };
    // Time measured inside the namespace, around each attempt alone.
    let script = format!(
        "for u in http://{}:{CLOSED_PORT}/ 'http://[{}]:{CLOSED_PORT}/'; do \
           s=$(date +%s%N); curl -sS --max-time 10 \"$u\" >/dev/null 2>&1; rc=$?; \
           e=$(date +%s%N); echo \"rc=$rc ms=$(( (e - s) / 1000000 ))\"; \
         done",
        addr::SERVER4,
        addr::SERVER6
    );
    let out = in_pasta(&lab, &[], &script, RUN_TIMEOUT);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", show(&out));
    for line in lines {
        let (rc, ms) = line
            .strip_prefix("rc=")
            .and_then(|l| l.split_once(" ms="))
            .unwrap_or_else(|| panic!("bad line {line}"));
        // curl's 7: "failed to connect" (refused).
        assert_eq!(rc, "7", "{}", show(&out));
        let ms: u64 = ms.parse().unwrap();
        assert!(ms < 2000, "refusal took {ms} ms: {}", show(&out));
    }
}

#[test]
fn a_forwarded_port_reaches_a_server_in_the_namespace() {
    let Some(mut lab) = lab_with(&["python3", "curl", "sha256sum"]) else {
        return;
    };
    let (dir, sha) = files();
    let ready = dir.path().join("ns-ready");
    let server = dir.path().join("server.py");
    let port = FORWARDED_PORT.to_string();
    let cmd = lab.host_command(
        None,
        &bin("pasta"),
        &[
            "--config-net",
            "-t",
            &port,
            "--",
            "python3",
            server.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &port,
            ready.to_str().unwrap(),
        ],
    );
    let pasta = lab.spawn_graceful(quiet(cmd));
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "the server in pasta's namespace didn't start"
    );
    let d = dir.path().display();
    let fetch = |name: &str, url: String| format!("curl -sS --max-time 15 -o {d}/{name} '{url}'");
    // From the lab's host namespace, where pasta listens: its own addresses and loopback.
    lab.host_sh(&fetch(
        "host4",
        format!("http://{}:{FORWARDED_PORT}/blob", addr::HOST4),
    ));
    lab.host_sh(&fetch(
        "lo4",
        format!("http://127.0.0.1:{FORWARDED_PORT}/blob"),
    ));
    // From the remote, over the veth.
    lab.remote_sh(&fetch(
        "remote4",
        format!("http://{}:{FORWARDED_PORT}/blob", addr::HOST4),
    ));
    lab.remote_sh(&fetch(
        "remote6",
        format!("http://[{}]:{FORWARDED_PORT}/blob", addr::HOST6),
    ));
    for name in ["host4", "lo4", "remote4", "remote6"] {
        assert_eq!(
            sha256_file(&dir.path().join(name)),
            sha,
            "{name}: copy differs"
        );
    }
    let status = lab.stop(pasta);
    // pasta ends with its command, which SIGTERM ends.
    assert!(status.is_some(), "pasta didn't stop");
}

/// The receiver's bitrate (Mbit/s) from iperf3's text output (`-f m`).
fn iperf_receiver_mbits(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_end().ends_with("receiver"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "Mbits/sec")?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

/// The first child of `pid` (pasta's command).
fn child_of(pid: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{pid} has no child");
}

#[test]
fn iperf3_each_way() {
    let Some(mut lab) = lab_with(&["iperf3", "nsenter", "ss"]) else {
        return;
    };
    let server = lab.remote_command("iperf3", &["-s", "-p", &IPERF_PORT.to_string()]);
    lab.spawn(quiet(server));
    assert!(lab.wait_listening(&lab.remote.clone(), IPERF_PORT, READY_TIMEOUT));

    // Out of the namespace, and back in (-R), on connections the namespace opens.
    let client = |reverse: &str| {
        format!(
            "iperf3 -c {} -p {IPERF_PORT} -t 2 -f m --connect-timeout 3000 {reverse}",
            addr::SERVER4
        )
    };
    let mut rates = Vec::new();
    for (what, flags) in [("namespace -> remote", ""), ("remote -> namespace", "-R")] {
        let out = in_pasta(&lab, &[], &client(flags), RUN_TIMEOUT);
        assert!(out.status.success(), "{what}: {}", show(&out));
        let mbits = iperf_receiver_mbits(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| panic!("{what}: no bitrate in {}", show(&out)));
        rates.push((what, mbits));
    }

    // Into the namespace through a forwarded port, from the remote.
    let port = IPERF_FORWARDED_PORT.to_string();
    let cmd = lab.host_command(
        None,
        &bin("pasta"),
        &[
            "--config-net",
            "-t",
            &port,
            "--",
            "iperf3",
            "-s",
            "-1",
            "-p",
            &port,
        ],
    );
    let pasta = lab.spawn_graceful(quiet(cmd));
    let inside = child_of(pasta, READY_TIMEOUT);
    assert!(
        common::wait_listening_with(
            &["nsenter", "-t", &inside.to_string(), "-n"],
            IPERF_FORWARDED_PORT,
            READY_TIMEOUT
        ),
        "iperf3 in pasta's namespace didn't start"
    );
    let out = run_timeout(
        &mut lab.remote_command(
            "iperf3",
            &[
                "-c",
                addr::HOST4,
                "-p",
                &port,
                "-t",
                "2",
                "-f",
                "m",
                "--connect-timeout",
                "3000",
            ],
        ),
        RUN_TIMEOUT,
    );
    assert!(out.status.success(), "forwarded: {}", show(&out));
    let mbits = iperf_receiver_mbits(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("forwarded: no bitrate in {}", show(&out)));
    rates.push(("remote -> namespace (-t forward)", mbits));
    lab.stop(pasta);

    for (what, mbits) in rates {
        eprintln!("iperf3 {what}: {mbits:.0} Mbit/s");
    }
}

#[test]
fn iperf_output_parsing() {
    let text = "[  5]   0.00-2.00   sec   512 MBytes  2147 Mbits/sec    0             sender\n\
                [  5]   0.00-2.04   sec   510 MBytes  2097.5 Mbits/sec                  receiver\n";
    assert_eq!(iperf_receiver_mbits(text), Some(2097.5));
    assert_eq!(iperf_receiver_mbits("nothing"), None);
}
