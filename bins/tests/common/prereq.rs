//! The one prerequisite check of every real-OS test, in `bins/tests` and (included by path)
//! in `os-shim/tests`: a test names everything it needs up front, and when something is
//! missing it prints `*** SKIPPED: needs X ***` and passes, except under `CI=true`, where a
//! missing prerequisite is a failure. `scripts/install-test-deps` installs all of them.

#![allow(dead_code)] // Each test binary needs its own part.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Something a test needs from the machine.
#[derive(Debug, Clone)]
pub enum Need {
    /// Running as root (namespaces, veths, `setpriv` to other users).
    Root,
    /// A program on `PATH`.
    Tool(&'static str),
    /// Busybox with these applets (`ping`, `nc`, `httpd`, `udhcpc`, `nslookup`...).
    Busybox(&'static [&'static str]),
    /// `/dev/net/tun` exists.
    Tun,
    /// `/dev/net/tun` can be opened by ordinary users (mode 0666, as distributions ship it).
    TunForOthers,
    /// Anything else, worked out by the test: what it is, and whether it is here.
    Other(String, bool),
}

/// Whether everything in `needs` is here. If not: a loud skip line naming what is missing, and
/// `false`; under `CI=true`, a panic instead.
pub fn require(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if missing.is_empty() {
        return true;
    }
    skip_because(&format!("needs {}", missing.join(", ")));
    false
}

/// A skip for a reason found only by trying (no user namespaces in this sandbox...): the same
/// line as [`require`]'s, and the same failure under `CI=true`.
pub fn skip_because(why: &str) {
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("test prerequisite missing under CI=true{test}: {why}");
    }
    // Straight to the descriptor: libtest swallows eprintln! of a test that passes.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {why} ***{test}\n");
}

impl Need {
    /// What is missing, worded for the skip line; `None` when it is here.
    fn missing(&self) -> Option<String> {
        match self {
            Need::Root => (!is_root()).then(|| "root".to_owned()),
            Need::Tool(tool) => (!on_path(tool)).then(|| format!("`{tool}` ({})", package(tool))),
            Need::Busybox(applets) => {
                let have = busybox_applets();
                let absent: Vec<&str> = applets
                    .iter()
                    .copied()
                    .filter(|a| !have.iter().any(|h| h == a))
                    .collect();
                if have.is_empty() {
                    Some(format!(
                        "busybox with {} (busybox-static)",
                        applets.join(", ")
                    ))
                } else if !absent.is_empty() {
                    Some(format!("busybox applets {}", absent.join(", ")))
                } else {
                    None
                }
            }
            Need::Tun => (!Path::new("/dev/net/tun").exists()).then(|| "/dev/net/tun".to_owned()),
            Need::TunForOthers => {
                let mode = std::fs::metadata("/dev/net/tun").map(|m| m.permissions().mode());
                (!matches!(mode, Ok(m) if m & 0o006 == 0o006)).then(|| {
                    "/dev/net/tun usable by ordinary users (chmod 0666 /dev/net/tun, as \
                     distributions ship it)"
                        .to_owned()
                })
            }
            Need::Other(what, here) => (!here).then(|| what.clone()),
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Whether an executable file called `tool` is in a directory of `PATH` (or `tool` is one,
/// given as a path).
pub fn on_path(tool: &str) -> bool {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return executable(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(tool))))
}

/// The applets of the `busybox` on `PATH` (empty if there is none, or it doesn't run).
fn busybox_applets() -> Vec<String> {
    Command::new("busybox")
        .arg("--list")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The Debian package a tool comes from, for the skip line (`scripts/install-test-deps`
/// installs them all).
fn package(tool: &str) -> &'static str {
    match tool {
        "ip" | "ss" => "iproute2",
        "setpriv" | "nsenter" | "unshare" => "util-linux",
        "script" => "bsdutils",
        "ps" => "procps",
        "sysctl" => "procps",
        "python3" => "python3",
        "curl" => "curl",
        "iperf3" => "iperf3",
        "qemu-system-x86_64" => "qemu-system-x86",
        "cpio" => "cpio",
        "gzip" => "gzip",
        "xz" => "xz-utils",
        "zstd" => "zstd",
        "ldd" => "libc-bin",
        "man" => "man-db",
        "make" => "make",
        "sha256sum" => "coreutils",
        _ => "see scripts/install-test-deps",
    }
}
