//! Target resolution (`pasta PID`, `--netns PATH`) and `NetnsWatch`, against namespaces made
//! by `unshare -n` and `ip netns add` (root).

mod ns_common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ns_common::{readlink, require, run_bounded, wait_bounded, Need};
use os_shim::ns::{self, join_userns, NetnsWatch, NsTarget};

/// A namespace made with `ip netns add`, deleted on drop.
struct NamedNetns {
    name: String,
}

impl NamedNetns {
    fn add(tag: &str) -> NamedNetns {
        let name = format!("os-shim-{tag}-{}", std::process::id());
        let out = run_bounded(
            Command::new("ip").args(["netns", "add", &name]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NamedNetns { name }
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn delete(&self) {
        let out = run_bounded(
            Command::new("ip").args(["netns", "del", &self.name]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "ip netns del: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if self.path().exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Waits (at most `timeout`) for `fd` to become readable.
fn readable_within(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) == 1 }
}

#[test]
fn pid_target_of_unshare_n() {
    if !require(&[Need::Root, Need::Tool("unshare"), Need::Tool("sleep")]) {
        return;
    }
    let mut child = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .spawn()
        .expect("unshare");
    let pid = child.id();
    let own_net = readlink("/proc/self/ns/net");
    // unshare(1) enters the new namespace, then execs sleep: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ns_path = format!("/proc/{pid}/ns/net");
    while std::fs::read_link(&ns_path)
        .map(|l| l.to_string_lossy() == own_net)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "unshare -n did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }

    let target = NsTarget::from_pid(pid, None, false).unwrap();
    assert_eq!(
        format!("net:[{}]", ns::ns_ino(&target.netns).unwrap()),
        readlink(&ns_path)
    );
    assert_eq!(target.netns_path, PathBuf::from(&ns_path));
    // Its user namespace is ours: joining it is a no-op, even in this multi-threaded process.
    let userns = target.userns.as_ref().expect("user namespace");
    assert_eq!(
        format!("user:[{}]", ns::ns_ino(userns).unwrap()),
        readlink("/proc/self/ns/user")
    );
    join_userns(userns).unwrap();
    assert!(NsTarget::from_pid(pid, None, true)
        .unwrap()
        .userns
        .is_none());
    let explicit = NsTarget::from_pid(pid, Some(Path::new("/proc/self/ns/user")), true).unwrap();
    assert!(explicit.userns.is_some());

    // procfs can't be watched with inotify: polled instead.
    let watch = NetnsWatch::new(&target.netns_path).unwrap();
    assert!(watch.fd().is_none());
    assert!(!watch.check());

    child.kill().unwrap();
    wait_bounded(&mut child, Duration::from_secs(5)).expect("sleep did not die");
    assert!(watch.check(), "the process is gone, so is /proc/PID/ns/net");
}

#[test]
fn netns_path_target_and_watch() {
    if !require(&[Need::Root, Need::Tool("ip")]) {
        return;
    }
    let ns = NamedNetns::add("watch");
    let other = NamedNetns::add("other");
    let target = NsTarget::from_path(&ns.path(), None).unwrap();
    assert!(target.userns.is_none());
    assert_ne!(
        format!("net:[{}]", ns::ns_ino(&target.netns).unwrap()),
        readlink("/proc/self/ns/net")
    );

    let mut watch = NetnsWatch::new(&ns.path()).unwrap();
    let fd = watch.fd().expect("inotify on /run/netns").as_raw_fd();
    // SAFETY: the watch outlives every use below.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    assert!(!watch.gone());
    assert!(!watch.check());

    // Another namespace going away in the same directory doesn't count.
    other.delete();
    if readable_within(fd, Duration::from_secs(2)) {
        assert!(!watch.gone());
    }

    let started = Instant::now();
    ns.delete();
    assert!(
        readable_within(fd, Duration::from_secs(2)),
        "no inotify event within 2 s of ip netns del"
    );
    assert!(watch.gone());
    assert!(watch.check());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_targets_are_named() {
    let err = NsTarget::from_path(Path::new("/nonexistent/netns"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot open /nonexistent/netns: No such file or directory"
    );
    let err = NsTarget::from_path(Path::new("/etc/hostname"), None).unwrap_err();
    assert_eq!(err.to_string(), "/etc/hostname is not a network namespace");
    let err = NsTarget::from_path(
        Path::new("/proc/self/ns/net"),
        Some(Path::new("/proc/self/ns/net")),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/proc/self/ns/net is not a user namespace (it is a network namespace)"
    );
    let err = NsTarget::from_pid(999_999_999, None, false).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot open /proc/999999999/ns/net: No such file"),
        "{err}"
    );
    let err = NetnsWatch::new(Path::new("/nonexistent/netns")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent"), "{err}");
}
