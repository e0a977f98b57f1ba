//! A network lab for real-OS tests: a "host" namespace, where our binaries run, whose only link
//! is a veth to a "remote" namespace. Nothing here touches the machine's own namespace: the
//! veth pair is created inside the namespaces, and the host namespace gets its own resolv.conf
//! (which `ip netns exec` bind-mounts over /etc/resolv.conf).
//!
//! Prerequisites: every test names what it needs with [`require`] (the lab itself needs root
//! and iproute2); missing ones make it say so loudly and skip, except under `CI=true`, where
//! that is a failure.

#![allow(dead_code)] // Each test binary uses its own part of the lab.

pub mod pcap;
mod prereq;
#[allow(unused_imports)] // Each test binary uses its own part.
pub use prereq::{require, skip_because, Need};

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Addresses of the lab, the same as `../shared/netlab`'s.
pub mod addr {
    pub const HOST4: &str = "198.51.100.2";
    pub const REMOTE4: &str = "198.51.100.1";
    pub const PREFIX4: u8 = 24;
    pub const HOST6: &str = "2001:db8:1::2";
    pub const REMOTE6: &str = "2001:db8:1::1";
    pub const PREFIX6: u8 = 64;
    pub const HOST_MAC: &str = "02:00:00:00:01:02";
    pub const REMOTE_MAC: &str = "02:00:00:00:01:01";
    pub const DNS4: &str = "203.0.113.53";
    pub const DNS6: &str = "2001:db8:2::53";
    pub const SEARCH: &str = "lab.test";
    /// Servers' addresses on the remote's loopback (see [`super::Lab::add_remote_servers`]):
    /// unlike the remote's link addresses, which are the host's gateways and so map to the
    /// host's own loopback from inside pasta, these reach the remote as they are.
    pub const SERVER4: &str = "203.0.113.10";
    pub const SERVER6: &str = "2001:db8:2::10";
}

/// The default bound for any command the lab runs.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How the host namespace is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// IPv4 and IPv6 addresses and default routes through the remote.
    DualStack,
    /// IPv4 only (IPv6 disabled on the link).
    Ipv4Only,
    /// IPv6 only.
    Ipv6Only,
    /// The veth exists and is up, with no addresses or routes: an offline host.
    Offline,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A pair of namespaces, deleted on drop.
pub struct Lab {
    pub host: String,
    pub remote: String,
    children: Vec<Child>,
    /// Stopped with SIGTERM first (pasta passes it on to its command, which would otherwise
    /// outlive it).
    graceful: Vec<Child>,
}

impl Lab {
    /// Builds the lab, or returns `None` (after saying why) when prerequisites are missing.
    pub fn new(shape: Shape) -> Option<Lab> {
        // setpriv: `host_command` runs programs as the test user through it.
        let mut needs = vec![Need::Root, Need::Tool("ip"), Need::Tool("setpriv")];
        if !matches!(shape, Shape::DualStack | Shape::Ipv6Only) {
            needs.push(Need::Tool("sysctl")); // Turns IPv6 off.
        }
        if !require(&needs) {
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("pt{}-{n}", std::process::id());
        let lab = Lab {
            host: format!("{tag}-h"),
            remote: format!("{tag}-r"),
            children: Vec::new(),
            graceful: Vec::new(),
        };
        lab.build(shape);
        Some(lab)
    }

    fn build(&self, shape: Shape) {
        let (h, r) = (self.host.as_str(), self.remote.as_str());
        ip(&["netns", "add", h]);
        ip(&["netns", "add", r]);
        // Created inside the namespaces: the machine's own namespace never sees the link.
        ip(&[
            "-n", h, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", r,
        ]);
        ip(&["-n", h, "link", "set", "veth0", "address", addr::HOST_MAC]);
        ip(&["-n", r, "link", "set", "veth0", "address", addr::REMOTE_MAC]);
        for ns in [h, r] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "veth0", "up"]);
        }
        let v4 = matches!(shape, Shape::DualStack | Shape::Ipv4Only);
        let v6 = matches!(shape, Shape::DualStack | Shape::Ipv6Only);
        if v4 {
            ip(&[
                "-n",
                h,
                "addr",
                "add",
                &format!("{}/{}", addr::HOST4, addr::PREFIX4),
                "dev",
                "veth0",
            ]);
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("{}/{}", addr::REMOTE4, addr::PREFIX4),
                "dev",
                "veth0",
            ]);
            ip(&["-n", h, "route", "add", "default", "via", addr::REMOTE4]);
        }
        if v6 {
            let host6 = format!("{}/{}", addr::HOST6, addr::PREFIX6);
            let remote6 = format!("{}/{}", addr::REMOTE6, addr::PREFIX6);
            ip(&["-n", h, "addr", "add", &host6, "dev", "veth0", "nodad"]);
            ip(&["-n", r, "addr", "add", &remote6, "dev", "veth0", "nodad"]);
            ip(&[
                "-n",
                h,
                "-6",
                "route",
                "add",
                "default",
                "via",
                addr::REMOTE6,
            ]);
        } else {
            self.host_sh("sysctl -qw net.ipv6.conf.veth0.disable_ipv6=1");
        }
        let dir = self.netns_etc();
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(
            dir.join("resolv.conf"),
            format!(
                "nameserver {}\nnameserver {}\nsearch {}\n",
                addr::DNS4,
                addr::DNS6,
                addr::SEARCH
            ),
        )
        .expect("write the lab's resolv.conf");
    }

    fn netns_etc(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.host)
    }

    /// Runs a shell command in the host namespace; panics unless it succeeds.
    pub fn host_sh(&self, script: &str) -> String {
        netns_sh(&self.host, script)
    }

    /// A command that runs `program args` in the host namespace, as root or as `user`.
    pub fn host_command<S: AsRef<OsStr>>(
        &self,
        user: Option<&TestUser>,
        program: &Path,
        args: &[S],
    ) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host]);
        if let Some(u) = user {
            cmd.args([
                "setpriv",
                &format!("--reuid={}", u.uid),
                &format!("--regid={}", u.gid),
                "--clear-groups",
                "--",
            ]);
            cmd.arg(staged(program));
        } else {
            cmd.arg(program);
        }
        cmd.args(args);
        cmd
    }

    /// Runs one of our binaries in the host namespace to completion, bounded by [`TIMEOUT`].
    pub fn run<S: AsRef<OsStr>>(
        &self,
        user: Option<&TestUser>,
        program: &Path,
        args: &[S],
    ) -> Output {
        run_timeout(&mut self.host_command(user, program, args), TIMEOUT)
    }

    /// Starts a long-running process; it is killed (by PID) when the lab is dropped.
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts a long-running process that [`Lab::stop`] or the lab's end stops with SIGTERM
    /// (then SIGKILL after 5 s): for pasta, which passes the signal on to its command.
    pub fn spawn_graceful(&mut self, mut cmd: Command) -> u32 {
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
        let pid = child.id();
        self.graceful.push(child);
        pid
    }

    /// Stops a process from [`Lab::spawn_graceful`]; returns its exit status.
    pub fn stop(&mut self, pid: u32) -> Option<ExitStatus> {
        let i = self.graceful.iter().position(|c| c.id() == pid)?;
        let mut child = self.graceful.remove(i);
        terminate(&mut child)
    }

    /// Runs a shell command in the remote namespace; panics unless it succeeds.
    pub fn remote_sh(&self, script: &str) -> String {
        netns_sh(&self.remote, script)
    }

    /// A command that runs `program args` in the remote namespace.
    pub fn remote_command<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.remote, program]);
        cmd.args(args);
        cmd
    }

    /// Puts [`addr::SERVER4`] and [`addr::SERVER6`] on the remote's loopback. The host
    /// namespace reaches them through its default routes, which point at the remote.
    pub fn add_remote_servers(&self) {
        ip(&[
            "-n",
            &self.remote,
            "addr",
            "add",
            &format!("{}/32", addr::SERVER4),
            "dev",
            "lo",
        ]);
        ip(&[
            "-n",
            &self.remote,
            "addr",
            "add",
            &format!("{}/128", addr::SERVER6),
            "dev",
            "lo",
        ]);
    }

    /// Starts [`DNS_SERVER_PY`] on the lab's resolver addresses ([`addr::DNS4`],
    /// [`addr::DNS6`], put on the remote's loopback); its files go in `dir`.
    pub fn start_dns(&mut self, dir: &TempDir) {
        self.remote_sh(&format!(
            "ip addr add {}/32 dev lo && ip addr add {}/128 dev lo",
            addr::DNS4,
            addr::DNS6
        ));
        let script = dir.path().join("dns.py");
        std::fs::write(&script, DNS_SERVER_PY).unwrap();
        let ready = dir.path().join("dns-ready");
        let mut cmd = self.remote_command(
            "python3",
            &[
                script.to_str().unwrap(),
                ready.to_str().unwrap(),
                &format!("{},53", addr::DNS4),
                &format!("{},53", addr::DNS6),
            ],
        );
        cmd.stdout(Stdio::null());
        self.spawn(cmd);
        assert!(wait_for_file(&ready, TIMEOUT), "DNS server didn't start");
    }

    /// Waits until something listens on TCP `port` in namespace `ns` (bounded).
    pub fn wait_listening(&self, ns: &str, port: u16, timeout: Duration) -> bool {
        wait_listening_with(&["ip", "netns", "exec", ns], port, timeout)
    }
}

/// Waits until `prefix ss -Htln` shows a listener on TCP `port` (bounded): `prefix` enters
/// the namespace (`ip netns exec NAME`, `nsenter -t PID -n`).
pub fn wait_listening_with(prefix: &[&str], port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = run_timeout(
            Command::new(prefix[0]).args(&prefix[1..]).args([
                "ss",
                "-Htln",
                &format!("sport = :{port}"),
            ]),
            TIMEOUT,
        );
        if out.status.success() && !out.stdout.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// SIGTERM, a bounded wait, then SIGKILL.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    // SAFETY: signals a child of ours, by PID.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if let Some(status) = wait_timeout(child, Duration::from_secs(5)) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A file server for byte-exact transfers: serves a directory over HTTP on `[::]:PORT`
/// (IPv4 too), creates a ready file once it listens, and dies on SIGTERM. Arguments:
/// DIRECTORY PORT READY-FILE.
pub const FILE_SERVER_PY: &str = r#"
import functools, http.server, socket, sys
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=sys.argv[1])
server = Server(("::", int(sys.argv[2])), handler)
open(sys.argv[3], "w").close()
server.serve_forever()
"#;

/// A UDP echo server on each address given (`addr port` pairs), then a ready file.
pub const UDP_ECHO_PY: &str = r#"
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

/// Sends one datagram to each `addr,port[,size]` (a greeting, padded to `size` bytes if
/// given) and prints `OK spec source same|different port=P` per reply.
pub const UDP_CLIENT_PY: &str = r#"
import socket, sys
for spec in sys.argv[1:]:
    a, p, *size = spec.split(",")
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    msg = ("hello " + spec).encode()
    msg += b"x" * (int(size[0]) - len(msg) if size else 0)
    s.sendto(msg, (a, int(p)))
    try:
        data, peer = s.recvfrom(65535)
        print("OK", spec, peer[0], "same" if data == msg else "different", "port=%d" % peer[1], flush=True)
    except socket.timeout:
        print("TIMEOUT", spec, flush=True)
"#;

/// A minimal authoritative DNS server for `remote.test` (A and AAAA; anything else gets
/// NXDOMAIN) on each `addr,port` given, then a ready file.
pub const DNS_SERVER_PY: &str = r#"
import select, socket, struct, sys
ready = sys.argv[1]
answers = {1: socket.inet_pton(socket.AF_INET, "203.0.113.10"),
           28: socket.inet_pton(socket.AF_INET6, "2001:db8:2::10")}
socks = []
for spec in sys.argv[2:]:
    a, p = spec.rsplit(",", 1)
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a, int(p)))
    socks.append(s)
open(ready, "w").close()
def answer(q):
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += 1 + q[i]
    qtype, = struct.unpack("!H", q[i + 1:i + 3])
    question = q[12:i + 5]
    name = ".".join(labels)
    rr = b""
    if name == "remote.test" and qtype in answers:
        data = answers[qtype]
        rr = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(data)) + data
    rcode = 0 if name == "remote.test" else 3
    head = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, 1 if rr else 0, 0, 0)
    return head + question + rr
while True:
    r, _, _ = select.select(socks, [], [], 60)
    if not r:
        break
    for s in r:
        q, peer = s.recvfrom(512)
        try:
            s.sendto(answer(q), peer)
        except Exception:
            pass
"#;

/// A scratch directory any user can read, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("passt-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temporary directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `len` random bytes to `path`; returns their SHA-256 (hex, from `sha256sum`).
pub fn random_file(path: &Path, len: usize) -> String {
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("read /dev/urandom");
    std::fs::write(path, &data).expect("write random file");
    sha256_file(path)
}

pub fn sha256_file(path: &Path) -> String {
    let out = run_timeout(Command::new("sha256sum").arg(path), TIMEOUT);
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Waits for a file to appear (bounded).
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    wait_until(timeout, || path.exists())
}

/// Waits (bounded) until `pred` holds, looking every 20 ms; whether it did.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.graceful {
            terminate(child);
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.host, &self.remote] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(self.netns_etc());
    }
}

fn ip(args: &[&str]) {
    let out = run_timeout(Command::new("ip").args(args), TIMEOUT);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `fd` the command's descriptor 5 (what `-F 5` and qrap expect), inherited across
/// exec. The caller keeps `fd` open until the command has started.
pub fn inherit_as_fd5(cmd: &mut Command, fd: RawFd) {
    // SAFETY: dup2 and fcntl only, between fork and exec. dup2 clears close-on-exec on 5;
    // when `fd` is 5 already, fcntl does.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 5 {
                libc::fcntl(5, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 5)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs a shell command in the namespace `ns`; panics unless it succeeds.
fn netns_sh(ns: &str, script: &str) -> String {
    let out = run_timeout(
        Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]),
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command with a deadline; kills it (by PID) when the deadline passes.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain both pipes in threads so a chatty child can't block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {timeout:?}");
    });
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Waits for a child up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An ordinary user for the unprivileged cases.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The unprivileged user: `PASST_TEST_USER` (CI creates one), else `nobody`.
pub fn test_user() -> TestUser {
    let name = std::env::var("PASST_TEST_USER").unwrap_or_else(|_| "nobody".to_owned());
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, &name])
            .output()
            .expect("run id");
        assert!(out.status.success(), "no user {name}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    TestUser {
        uid: id("-u"),
        gid: id("-g"),
        name: name.clone(),
    }
}

/// A copy of `program` that any user can run: the build tree may sit below a directory only
/// root can enter (CI clones into one). The copy keeps the file name, which picks the mode.
pub fn staged(program: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("passt-tests-{}", std::process::id()));
    let target = dir.join(program.file_name().expect("binary file name"));
    if !target.exists() {
        remove_stale_staging();
        std::fs::create_dir_all(&dir).expect("create staging directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod staging directory");
        // Copy under a temporary name and rename, so that parallel tests never run a half copy.
        // The copy is written by a `cp` of its own: were the file open for writing in this
        // process, a child another test thread forks meanwhile would inherit that descriptor
        // until its exec, and running the copy then fails with ETXTBSY ("Text file busy").
        let partial =
            target.with_extension(format!("part{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let copied = std::process::Command::new("cp")
            .arg(program)
            .arg(&partial)
            .status()
            .expect("run cp to stage the binary");
        assert!(copied.success(), "staging {} failed", program.display());
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .expect("chmod binary");
        std::fs::rename(&partial, &target).expect("rename staged binary");
    }
    target
}

/// Removes the staging directories of test processes that are gone (a test binary can't
/// clean up after itself at exit: there is no hook after the last test).
fn remove_stale_staging() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("passt-tests-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Path of one of our binaries, built by cargo for these tests.
pub fn bin(name: &str) -> PathBuf {
    let real = match name {
        "passt" => PathBuf::from(env!("CARGO_BIN_EXE_passt")),
        "pasta" => PathBuf::from(env!("CARGO_BIN_EXE_pasta")),
        "qrap" => PathBuf::from(env!("CARGO_BIN_EXE_qrap")),
        "pesto" => PathBuf::from(env!("CARGO_BIN_EXE_pesto")),
        other => panic!("no binary {other}"),
    };
    // The seccomp audit traces the sandboxed programs only.
    match std::env::var_os("PASST_TEST_STRACE") {
        Some(dir) if name != "qrap" && name != "pesto" => traced(&real, Path::new(&dir)),
        _ => real,
    }
}

/// For `scripts/seccomp-audit`: a wrapper of the same name that runs `real` under `strace -f`,
/// writing one trace per run into `dir` (the binary copied there, so that any user can run it).
fn traced(real: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let name = real.file_name().expect("binary file name");
    let wrappers = dir.join("bin");
    let copies = dir.join("real");
    let wrapper = wrappers.join(name);
    if !wrapper.exists() {
        for d in [dir, &wrappers, &copies] {
            let _ = std::fs::create_dir_all(d);
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777));
        }
        let copy = copies.join(name);
        let partial = copy.with_extension(format!("part{}", std::process::id()));
        std::fs::copy(real, &partial).expect("copy the binary to trace");
        std::fs::rename(&partial, &copy).expect("copy the binary to trace");
        let script = format!(
            "#!/bin/sh\nexec strace -f -qq -o {}/trace.$$ -- {} \"$@\"\n",
            dir.display(),
            copy.display()
        );
        let partial = wrapper.with_extension(format!("part{}", std::process::id()));
        std::fs::write(&partial, script).expect("write the strace wrapper");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &wrapper).expect("write the strace wrapper");
    }
    wrapper
}

/// A finished command's status and output, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// pasta's tap summary from its debug log ("tap: ... segmented writes ...").
pub fn tap_summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.contains("segmented writes"))
        .unwrap_or_else(|| panic!("no tap summary in pasta's log: {}", show(out)))
        .to_string()
}

/// The number just before `what` in `summary` (" segmented writes", " TCP segments read
/// whole").
pub fn count_before(summary: &str, what: &str) -> u64 {
    summary
        .split(what)
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {what:?} in: {summary}"))
}

/// What a running passt or pasta keeps: /proc/PID/status's identity, capabilities, no-new-
/// privileges and seccomp lines, and how many entries its root directory shows.
#[derive(Debug)]
pub struct Isolation {
    pub status: os_shim::isolation::Status,
    pub root_entries: usize,
}

pub fn isolation_of(pid: u32) -> Isolation {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let root_entries = std::fs::read_dir(format!("/proc/{pid}/root"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX);
    Isolation {
        status: os_shim::isolation::Status::parse(&text),
        root_entries,
    }
}

/// Checks the sandbox of process `pid`: running as `uid`, no capability outside `caps`, no
/// new privileges, a seccomp filter, an empty root directory.
pub fn assert_isolated(pid: u32, uid: u32, caps: u64) {
    let i = isolation_of(pid);
    let s = &i.status;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    let pid = format!("{pid} ({cmdline})");
    assert_eq!(s.uid, Some(uid), "{pid}: {s}");
    assert_eq!(
        s.cap_eff.unwrap_or(u64::MAX) & !caps,
        0,
        "{pid}: capabilities beyond {caps:#x}: {s}"
    );
    assert_eq!(s.no_new_privs, Some(1), "{pid}: {s}");
    assert_eq!(s.seccomp, Some(2), "{pid}: {s}");
    assert_eq!(i.root_entries, 0, "{pid}: its root directory isn't empty");
}

/// A program we started with its standard error collected as it comes (for waiting on a
/// line, and for failure messages); killed, by PID, if still running when dropped.
pub struct Collected {
    pub child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Collected {
    /// Starts `cmd` with no input, its output dropped and its standard error collected.
    pub fn start(mut cmd: Command) -> Collected {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Collected { child, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for `text` on its standard error.
    pub fn wait_stderr(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The CPU time (user + system) process `pid` has used so far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces and parentheses), from field 3 on:
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
