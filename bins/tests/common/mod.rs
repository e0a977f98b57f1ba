//! A network lab for real-OS tests: a "host" namespace, where our binaries run, whose only link
//! is a veth to a "remote" namespace. Nothing here touches the machine's own namespace: the
//! veth pair is created inside the namespaces, and the host namespace gets its own resolv.conf
//! (which `ip netns exec` bind-mounts over /etc/resolv.conf).
//!
//! Prerequisites (root, iproute2) missing: the test says so loudly and skips, except under
//! `CI=true`, where that is a failure.

#![allow(dead_code)] // Each test binary uses its own part of the lab.

use std::ffi::OsStr;
use std::io::Read;
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
}

/// The default bound for any command the lab runs.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Whether the real-OS tests can run here. Prints why not, and panics under CI.
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (to create network namespaces)".to_owned());
    }
    if Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        missing.push("iproute2's `ip`".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("real-OS test prerequisites missing under CI: {what}");
    }
    eprintln!("\n*** SKIPPED: real-OS test needs {what} ***\n");
    false
}

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
}

impl Lab {
    /// Builds the lab, or returns `None` (after saying why) when prerequisites are missing.
    pub fn new(shape: Shape) -> Option<Lab> {
        if !prerequisites() {
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("pt{}-{n}", std::process::id());
        let lab = Lab {
            host: format!("{tag}-h"),
            remote: format!("{tag}-r"),
            children: Vec::new(),
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
        let out = run_timeout(
            Command::new("ip").args(["netns", "exec", &self.host, "sh", "-c", script]),
            TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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
}

impl Drop for Lab {
    fn drop(&mut self) {
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
        std::fs::create_dir_all(&dir).expect("create staging directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod staging directory");
        // Copy under a temporary name and rename, so that parallel tests never run a half copy.
        let partial =
            target.with_extension(format!("part{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::copy(program, &partial).expect("stage binary");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .expect("chmod binary");
        std::fs::rename(&partial, &target).expect("rename staged binary");
    }
    target
}

/// Path of one of our binaries, built by cargo for these tests.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "passt" => PathBuf::from(env!("CARGO_BIN_EXE_passt")),
        "pasta" => PathBuf::from(env!("CARGO_BIN_EXE_pasta")),
        "qrap" => PathBuf::from(env!("CARGO_BIN_EXE_qrap")),
        other => panic!("no binary {other}"),
    }
}
