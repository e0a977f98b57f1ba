//! Process chores: the random seed, the PID file, going to the background.

use std::io::Write as _;
use std::path::Path;

/// A seed for the engine from the kernel's random pool; a clock reading if that fails (the seed
/// only needs to differ between runs, it guards nothing by itself yet).
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: writes at most bytes.len() bytes into a buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        os_shim::reactor::monotonic_now().as_nanos() ^ u64::from(std::process::id())
    }
}

/// Writes `pid` to the `--pid` file, if one was asked for. Nobody removes it at exit, as with
/// the C originals: Podman reads it after pasta is gone, to wait for that PID to go away.
pub fn write_pid_file(path: Option<&Path>, pid: u32) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let mut f = std::fs::File::create(path)
        .map_err(|e| format!("cannot write PID file {}: {e}", path.display()))?;
    writeln!(f, "{pid}").map_err(|e| format!("cannot write PID file {}: {e}", path.display()))
}

/// Goes to the background once ready: forks; the parent writes the daemon's PID to the PID file
/// and exits successfully, which is how callers (Podman, libvirt) learn that we are ready. The
/// daemon starts a new session and points its standard streams at /dev/null.
///
/// Call it when no other thread is running.
pub fn daemonize(pid_file: Option<&Path>) -> Result<(), String> {
    // SAFETY: single-threaded here (documented precondition); the child only continues with
    // ordinary Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain system calls.
            unsafe { libc::setsid() };
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    // SAFETY: duplicating a valid descriptor over our standard streams.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            Ok(())
        }
        child => {
            let code = match write_pid_file(pid_file, child as u32) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{e}");
                    // The daemon runs on but nobody can find it: stop it, and say we failed.
                    // SAFETY: signalling the child we just forked.
                    unsafe { libc::kill(child, libc::SIGTERM) };
                    crate::EXIT_FAILURE
                }
            };
            let _ = std::io::stderr().flush();
            // Leave without running destructors: the descriptors now belong to the daemon.
            // SAFETY: ends this process.
            unsafe { libc::_exit(code) }
        }
    }
}
