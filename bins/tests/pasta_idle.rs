//! Real OS: idle TCP flows cost pasta nothing. A namespace holds hundreds of established
//! connections that each carried a byte and then sit idle (a keep-alive pool, idle SSH
//! sessions); pasta must sleep until something happens on one of them, not poll them.
//!
//! The bound is on pasta's own CPU time (utime + stime from /proc/PID/stat) over a measuring
//! window, not on wall-clock time: a loaded machine doesn't make it flaky.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{addr, bin, cpu_time, require, wait_for_file, Lab, Need, Shape, TempDir};

const ECHO_PORT: u16 = 7000;
const FLOWS: usize = 300;
/// How long the flows sit idle while pasta's CPU time is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// pasta's CPU budget for that window: a tenth of a second is far above what waking for a
/// few timers costs, and far below the 3.5 s that polling 300 flows took.
const CPU_BUDGET: Duration = Duration::from_millis(100);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An echo server for many connections at once: `addr,port` pairs, then a ready file.
const ECHO_SERVER_PY: &str = r#"
import selectors, socket, sys
ready = sys.argv[1]
sel = selectors.DefaultSelector()
for spec in sys.argv[2:]:
    a, p = spec.rsplit(",", 1)
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, int(p)))
    s.listen(1024)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, None)
open(ready, "w").close()
while True:
    events = sel.select(120)
    if not events:
        break
    for key, _ in events:
        if key.data is None:
            c, _ = key.fileobj.accept()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, "c")
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if data:
                key.fileobj.send(data)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
"#;

/// Inside pasta: opens N connections to each address (alternating), echoes one byte on each,
/// says "ready", waits (bounded) for the go-ahead file, then checks every flow still echoes.
/// Arguments: N READY GO addr,port...
const IDLE_CLIENT_PY: &str = r#"
import os, socket, sys, time
n, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
targets = [t.rsplit(",", 1) for t in sys.argv[4:]]
conns = []
for i in range(n):
    a, p = targets[i % len(targets)]
    s = socket.create_connection((a, int(p)), timeout=10)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    conns.append(s)
open(ready, "w").close()
deadline = time.time() + 60
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
for s in conns:
    s.sendall(b"y")
    assert s.recv(1) == b"y"
print("ALL ECHOED", len(conns), flush=True)
"#;

#[test]
fn hundreds_of_idle_tcp_flows_cost_no_cpu() {
    if !require(&[
        Need::Root,
        Need::Tun,
        Need::Tool("python3"),
        Need::Tool("ip"),
    ]) {
        return;
    }
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    lab.add_remote_servers();
    let dir = TempDir::new("idle");
    let server = dir.path().join("echo.py");
    std::fs::write(&server, ECHO_SERVER_PY).unwrap();
    let client = dir.path().join("client.py");
    std::fs::write(&client, IDLE_CLIENT_PY).unwrap();
    let server_ready = dir.path().join("server-ready");
    let v4 = format!("{},{ECHO_PORT}", addr::SERVER4);
    let v6 = format!("{},{ECHO_PORT}", addr::SERVER6);
    let mut cmd = lab.remote_command(
        "python3",
        &[
            server.to_str().unwrap(),
            server_ready.to_str().unwrap(),
            &v4,
            &v6,
        ],
    );
    cmd.stdout(Stdio::null());
    lab.spawn(cmd);
    assert!(wait_for_file(&server_ready, READY_TIMEOUT), "echo server");

    let ready = dir.path().join("flows-ready");
    let go = dir.path().join("go");
    let n = FLOWS.to_string();
    let args = [
        "--config-net",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--",
        "python3",
        client.to_str().unwrap(),
        &n,
        ready.to_str().unwrap(),
        go.to_str().unwrap(),
        &v4,
        &v6,
    ];
    let mut cmd = lab.host_command(None, &bin("pasta"), &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut pasta = cmd.spawn().expect("spawn pasta");
    let pid = pasta.id();
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "the {FLOWS} flows were not all established"
    );
    // Let the last ACKs settle, then measure a quiet window.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_time(pid);
    std::thread::sleep(IDLE_WINDOW);
    let spent = cpu_time(pid) - before;
    std::fs::write(&go, "").unwrap();
    let status = common::wait_timeout(&mut pasta, READY_TIMEOUT);
    if status.is_none() {
        let _ = pasta.kill();
    }
    let out = pasta.wait_with_output().expect("pasta's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains(&format!("ALL ECHOED {FLOWS}")),
        "the idle flows didn't all work afterwards: {status:?}\n{stdout}\n{stderr}"
    );
    eprintln!("pasta's CPU time over {IDLE_WINDOW:?} with {FLOWS} idle flows: {spent:?}");
    assert!(
        spent < CPU_BUDGET,
        "pasta spent {spent:?} of CPU in {IDLE_WINDOW:?} with {FLOWS} idle flows (budget {CPU_BUDGET:?})"
    );
}
