//! Real OS: pasta at its descriptor limit. With `RLIMIT_NOFILE` lowered to 64 and many more
//! connections to a `-t` port than that, pasta must sleep between events (its CPU time over
//! 5 s of saturation stays under 0.2 s), a transfer on a connection made before keeps moving
//! and arrives byte for byte, and once the flood's connections close a new one is served.
//!
//! Everything runs inside the lab (see common/mod.rs): pasta in the lab's host namespace, an
//! echo server in pasta's namespace, the clients in the remote namespace.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{
    addr, bin, cpu_time, require, run_timeout, show, wait_for_file, Collected, Lab, Need, Shape,
    TempDir,
};

const PORT: u16 = 9000;
/// The descriptor limit pasta gets, as `ulimit -n 64` would.
const NOFILE: u64 = 64;
/// Connections the flood opens: well beyond [`NOFILE`].
const FLOOD: usize = 300;
const TRANSFER_LEN: usize = 4 << 20;
/// How long saturation is measured.
const MEASURE: Duration = Duration::from_secs(5);
/// pasta's CPU time over [`MEASURE`] at most.
const CPU_BOUND: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(20);

/// Echoes every connection on PORT (a thread each), after raising its own descriptor limit
/// to the hard one; creates READY once listening. Arguments: PORT READY.
const ECHO_SERVER_PY: &str = r#"
import resource, socket, socketserver, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
server = Server(("0.0.0.0", int(sys.argv[1])), Echo)
open(sys.argv[2], "w").close()
server.serve_forever()
"#;

/// Connects to HOST PORT, creates STARTED, waits (bounded) for GO, then sends LEN random
/// bytes and reads the echo back; prints OK if it matches. Arguments: HOST PORT STARTED GO LEN.
const TRANSFER_PY: &str = r#"
import os, socket, sys, threading, time
host, port, started, go, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
s = socket.create_connection((host, port), timeout=30)
s.sendall(b"x")
assert s.recv(1) == b"x"
open(started, "w").close()
for _ in range(1200):
    if os.path.exists(go):
        break
    time.sleep(0.05)
data = os.urandom(size)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    got += b
t.join()
print("OK" if bytes(got) == data else "MISMATCH %d of %d bytes" % (len(got), size), flush=True)
"#;

/// Opens N connections to HOST PORT and holds them until RELEASE appears (bounded), then
/// closes them all and creates CLOSED. Arguments: HOST PORT N RELEASE CLOSED.
const FLOOD_PY: &str = r#"
import os, socket, sys, time
host, port, n, release, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
conns = []
for _ in range(n):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect((host, port))
    except BlockingIOError:
        pass
    conns.append(c)
for _ in range(1200):
    if os.path.exists(release):
        break
    time.sleep(0.05)
for c in conns:
    c.close()
open(closed, "w").close()
"#;

/// Tries (bounded) to have one line echoed by HOST PORT; prints OK and the attempts it took.
const ONE_ECHO_PY: &str = r#"
import socket, sys, time
for attempt in range(1, 41):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
        s.settimeout(1)
        s.sendall(b"ping\n")
        if s.recv(16) == b"ping\n":
            print("OK", attempt, flush=True)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
print("FAILED", flush=True)
"#;

/// pasta, spawned with its stderr collected (see [`Collected`]).
struct Pasta(Collected);

impl std::ops::Deref for Pasta {
    type Target = Collected;
    fn deref(&self) -> &Collected {
        &self.0
    }
}

impl Pasta {
    fn start(lab: &Lab, args: &[&str]) -> Pasta {
        Pasta(Collected::start(lab.host_command(
            None,
            &bin("pasta"),
            args,
        )))
    }

    fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    fn set_nofile(&self, limit: u64) {
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: plain system call on a process of ours, with a valid struct.
        let rc = unsafe {
            libc::prlimit(
                self.pid() as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &lim,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
}

fn python(lab: &Lab, dir: &Path, name: &str, script: &str, args: &[&str]) -> std::process::Command {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    let mut all = vec![path.to_str().unwrap().to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = lab.remote_command("python3", &all);
    cmd.stdin(Stdio::null());
    cmd
}

#[test]
fn at_the_descriptor_limit_transfers_finish_and_accepting_resumes() {
    saturate(false);
}

/// While saturated, pasta sleeps between events: its CPU time over 5 s stays under 0.2 s.
#[test]
fn at_the_descriptor_limit_pasta_sleeps() {
    saturate(true);
}

/// The scenario of the module documentation; the CPU bound is asserted with `check_cpu`
/// (the figure is printed either way).
fn saturate(check_cpu: bool) {
    if !require(&[Need::Tun, Need::Tool("python3")]) {
        return;
    }
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let dir = TempDir::new("limits");
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let server = dir.path().join("echo.py");
    std::fs::write(&server, ECHO_SERVER_PY).unwrap();
    let port = PORT.to_string();
    let pasta = Pasta::start(
        &lab,
        &[
            "--config-net",
            "-t",
            &port,
            "--",
            "python3",
            server.to_str().unwrap(),
            &port,
            &d("ready"),
        ],
    );
    assert!(
        wait_for_file(&dir.path().join("ready"), WAIT),
        "the echo server didn't start: {}",
        pasta.stderr()
    );
    pasta.set_nofile(NOFILE);

    // A connection made before the limit is reached; its transfer runs later.
    let mut transfer = python(
        &lab,
        dir.path(),
        "transfer.py",
        TRANSFER_PY,
        &[
            addr::HOST4,
            &port,
            &d("started"),
            &d("go"),
            &TRANSFER_LEN.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(wait_for_file(&dir.path().join("started"), WAIT));

    // The flood: pasta runs out of descriptors, and says so.
    let mut flood = python(
        &lab,
        dir.path(),
        "flood.py",
        FLOOD_PY,
        &[
            addr::HOST4,
            &port,
            &FLOOD.to_string(),
            &d("release"),
            &d("closed"),
        ],
    )
    .spawn()
    .unwrap();
    assert!(
        pasta.wait_stderr("out of file descriptors", WAIT),
        "no word of the descriptor limit: {}",
        pasta.stderr()
    );

    // Saturated: pasta sleeps between events.
    let before = pasta.cpu_time();
    std::thread::sleep(MEASURE);
    let cpu = pasta.cpu_time() - before;
    println!("pasta's CPU time over {MEASURE:?} at the descriptor limit: {cpu:?}");

    // Still saturated: the transfer on the connection made before moves, byte for byte.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = common::wait_timeout(&mut transfer, Duration::from_secs(60))
        .expect("the transfer didn't finish");
    let mut out = String::new();
    transfer
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success() && out.trim() == "OK", "transfer: {out}");

    // The flood goes; a new connection is served.
    std::fs::write(dir.path().join("release"), "").unwrap();
    assert!(wait_for_file(&dir.path().join("closed"), WAIT));
    let _ = common::wait_timeout(&mut flood, WAIT);
    let mut one = python(
        &lab,
        dir.path(),
        "one.py",
        ONE_ECHO_PY,
        &[addr::HOST4, &port],
    );
    let out = run_timeout(&mut one, WAIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("OK"), "{}", show(&out));
    println!("a new connection after the flood: {}", text.trim());

    assert!(
        !check_cpu || cpu < CPU_BOUND,
        "pasta used {cpu:?} of CPU over {MEASURE:?} at its descriptor limit\n{}",
        pasta.stderr()
    );
}
