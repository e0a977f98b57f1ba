//! Real OS: full UDP and echo flow tables don't cut the namespace off. From inside
//! `pasta --config-net`, 5,000 DNS lookups against the lab's resolver, each from a fresh
//! source port (as stub resolvers do), more than pasta's descriptors allow flows (its limit
//! set to 2,048: the UDP table itself holds more, and running out of descriptors is met the
//! same way), all get answers, and a fresh UDP echo after them too; 1,100 pings with distinct
//! identifiers, more than the echo table holds, all get replies, and a new ping after them
//! too. pasta runs with `--debug` and says that it made room, which shows the tables (or the
//! descriptors) really ran out; it refuses nothing.
//!
//! Everything runs inside the lab (see common/mod.rs).

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{
    addr, bin, require, run_timeout, show, wait_for_file, Lab, Need, Shape, TempDir, UDP_ECHO_PY,
};
use sans_io::flow::{icmp, udp};

/// pasta's descriptor limit (soft and hard) for the lookups: fewer than the UDP table holds.
const NOFILE: u64 = 2048;
const _: () = assert!((NOFILE as usize) < udp::DEFAULT_MAX_FLOWS);
/// Lookups: more flows than pasta has descriptors for.
const LOOKUPS: usize = 5_000;
const _: () = assert!(LOOKUPS > NOFILE as usize);
/// Echo identifiers: more than the echo table holds.
const PING_IDS: usize = 1_100;
const _: () = assert!(PING_IDS > icmp::DEFAULT_MAX_FLOWS);
/// Bounds the whole run inside pasta; the client scripts give up sooner (see them).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Looks `remote.test` up COUNT times against SERVER, each from a socket of its own bound to
/// a port of its own (from 20000 on), waiting for each answer (2 s at most); prints
/// `ANSWERED n` and the first failures, then a fresh UDP echo's outcome against ECHO
/// (`addr,port`). Gives up after 20 failures or 120 s. Arguments: SERVER COUNT ECHO.
const LOOKUPS_PY: &str = r#"
import socket, struct, sys, time
server, count, echo = sys.argv[1], int(sys.argv[2]), sys.argv[3]
want = socket.inet_pton(socket.AF_INET, "203.0.113.10")
answered, failed = 0, []
deadline = time.monotonic() + 120
for i in range(count):
    qid = i & 0xffff
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x06remote\x04test\x00" + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + i))
    s.settimeout(2)
    s.sendto(query, (server, 53))
    try:
        data = s.recv(512)
        if data[:2] == struct.pack("!H", qid) and want in data:
            answered += 1
        else:
            failed.append(i)
    except socket.timeout:
        failed.append(i)
    s.close()
    if len(failed) > 20 or time.monotonic() > deadline:
        break
print("ANSWERED", answered, "FAILED", failed[:5], flush=True)
a, p = echo.rsplit(",", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"after the lookups", (a, int(p)))
try:
    print("ECHO", "OK" if s.recv(512) == b"after the lookups" else "WRONG", flush=True)
except socket.timeout:
    print("ECHO TIMEOUT", flush=True)
"#;

/// Pings TARGET once from each of COUNT ping sockets bound to identifiers 1..=COUNT, waiting
/// for each reply (2 s at most), then from identifier 40000; prints `REPLIED n`, the first
/// failures, and `LAST OK` or `LAST TIMEOUT`. Gives up after 20 failures or 60 s.
/// Arguments: TARGET COUNT.
const PINGS_PY: &str = r#"
import socket, struct, sys, time
target, count = sys.argv[1], int(sys.argv[2])
def ping(ident):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.bind(("0.0.0.0", ident))
    s.settimeout(2)
    s.sendto(b"\x08\x00\x00\x00" + struct.pack("!HH", ident, 1) + b"flow table", (target, 0))
    try:
        data = s.recv(512)
        return data[0] == 0 and data[8:] == b"flow table"
    except socket.timeout:
        return False
    finally:
        s.close()
replied, failed = 0, []
deadline = time.monotonic() + 60
for ident in range(1, count + 1):
    if ping(ident):
        replied += 1
    else:
        failed.append(ident)
    if len(failed) > 20 or time.monotonic() > deadline:
        break
print("REPLIED", replied, "FAILED", failed[:5], flush=True)
print("LAST", "OK" if ping(40000) else "TIMEOUT", flush=True)
"#;

fn lab() -> Option<Lab> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("/dev/net/tun is missing under CI");
        }
        eprintln!("\n*** SKIPPED: needs /dev/net/tun ***\n");
        return None;
    }
    if !require(&[Need::Tun, Need::Tool("python3")]) {
        return None;
    }
    let lab = Lab::new(Shape::DualStack)?;
    lab.add_remote_servers();
    Some(lab)
}

/// Runs `python3 SCRIPT ARGS` inside `pasta --config-net --debug`, with `nofile` as its
/// descriptor limit (soft and hard) if given.
fn in_pasta(
    lab: &Lab,
    dir: &TempDir,
    script: &str,
    args: &[String],
    nofile: Option<u64>,
) -> Output {
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).unwrap();
    let mut pasta_args = vec![
        "--config-net".to_owned(),
        "--debug".to_owned(),
        "--".to_owned(),
        "python3".to_owned(),
        path.display().to_string(),
    ];
    pasta_args.extend_from_slice(args);
    let mut cmd = lab.host_command(None, &bin("pasta"), &pasta_args);
    if let Some(limit) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    run_timeout(&mut cmd, RUN_TIMEOUT)
}

#[test]
fn more_one_shot_dns_lookups_than_descriptors_for_their_flows_all_get_answers() {
    let Some(mut lab) = lab() else {
        return;
    };
    let dir = TempDir::new("flow-table-udp");
    lab.start_dns(&dir);
    let (echo, ready) = (dir.path().join("echo.py"), dir.path().join("echo-ready"));
    std::fs::write(&echo, UDP_ECHO_PY).unwrap();
    let mut cmd = lab.remote_command(
        "python3",
        &[
            echo.to_str().unwrap(),
            ready.to_str().unwrap(),
            &format!("{},7", addr::SERVER4),
        ],
    );
    cmd.stdout(Stdio::null());
    lab.spawn(cmd);
    assert!(
        wait_for_file(&ready, common::TIMEOUT),
        "echo server didn't start"
    );

    let args = [
        addr::DNS4.to_owned(),
        LOOKUPS.to_string(),
        format!("{},7", addr::SERVER4),
    ];
    let out = in_pasta(&lab, &dir, LOOKUPS_PY, &args, Some(NOFILE));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("ANSWERED {LOOKUPS} FAILED []")),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("ECHO OK"), "{}", show(&out));
    // The descriptors ran out, room was made, and nothing was refused.
    assert!(stderr.contains("UDP flows: closed"), "{}", show(&out));
    assert!(!stderr.contains("flow table full"), "{}", show(&out));
}

#[test]
fn more_ping_identifiers_than_the_echo_table_holds_all_get_replies() {
    let Some(lab) = lab() else {
        return;
    };
    // pasta runs as root here; the lab's host namespace lets nobody open ping sockets.
    lab.host_sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    let dir = TempDir::new("flow-table-icmp");
    let args = [addr::SERVER4.to_owned(), PING_IDS.to_string()];
    let out = in_pasta(&lab, &dir, PINGS_PY, &args, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("REPLIED {PING_IDS} FAILED []")),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("LAST OK"), "{}", show(&out));
    assert!(stderr.contains("echo flows: closed"), "{}", show(&out));
    assert!(!stderr.contains("flow table full"), "{}", show(&out));
}
