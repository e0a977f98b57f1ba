//! For tests (the relays' here, the runtime forwarding's in bins): a "host" and a "namespace"
//! of their own, made by the test, so that nothing touches the machine's network. Not part of
//! the shim's interface for programs.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::netlink::Netlink;

/// Whether tests that make namespaces can run here (they need root); under CI they must.
pub fn can_make_namespaces(what: &str) -> bool {
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} tests need root under CI");
    }
    eprintln!("\n*** SKIPPED: {what} tests need root (namespaces of their own) ***\n");
    false
}

/// Runs `f` on a thread in a fresh network namespace, the "host", with another fresh one,
/// the "namespace", given as a descriptor; both have their loopback up.
pub fn with_host_and_namespace(f: impl FnOnce(OwnedFd) + Send + 'static) {
    std::thread::spawn(move || {
        let ns = std::thread::spawn(|| {
            fresh_netns();
            OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
        })
        .join()
        .unwrap();
        fresh_netns();
        f(ns)
    })
    .join()
    .unwrap();
}

/// Moves this thread into a new network namespace and brings its loopback up.
fn fresh_netns() {
    // SAFETY: affects this thread only.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
    let mut nl = Netlink::open().expect("netlink");
    let lo = nl.link_index("lo").expect("lo");
    nl.set_link_up(lo, true).expect("lo up");
}

/// Runs `f` on a new thread inside the namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.try_clone().unwrap();
    std::thread::spawn(move || {
        // SAFETY: affects this thread only.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        drop(ns);
        f()
    })
}

/// A new epoll instance, and a second handle to it for a relay to be attached with.
pub fn epoll_pair() -> (nix::sys::epoll::Epoll, nix::sys::epoll::Epoll) {
    use nix::sys::epoll::{Epoll, EpollCreateFlags};
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    let handle = Epoll(epoll.0.try_clone().unwrap());
    (epoll, handle)
}
