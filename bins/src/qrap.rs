//! qrap: for qemu versions without `-netdev stream`. Connects to a passt that is waiting for a
//! guest, puts the connection at the descriptor number qemu is told about (`-net
//! socket,fd=N`), and replaces itself with qemu.
//!
//! A passt serving a guest already accepts a further connection and closes it at once: qrap
//! waits briefly for that close, and tries the next socket when it comes.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::EXIT_FAILURE;

/// Environment variable naming the one socket to use instead of the default paths.
pub const SOCKET_ENV: &str = "QRAP_SOCKET";
/// How long a busy passt gets to close our connection.
const BUSY_WAIT: Duration = Duration::from_millis(200);

const USAGE: &str = "Usage: qrap FDNUM QEMU_CMD [QEMU_ARG]...\n\
    Connects to a waiting passt (/tmp/passt_1.socket to /tmp/passt_64.socket, or $QRAP_SOCKET)\n\
    and runs QEMU_CMD with that connection as descriptor FDNUM, for -net socket,fd=FDNUM.";

/// Runs qrap; returns only on failure (or for `--help`), with the exit status.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    if args.len() == 2 && matches!(args[1].to_str(), Some("-h" | "--help")) {
        println!("{USAGE}");
        return 0;
    }
    if args.len() < 3 {
        eprintln!("{USAGE}");
        return EXIT_FAILURE;
    }
    let fdnum = match parse_fd(&args[1]) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("qrap: {e}");
            return EXIT_FAILURE;
        }
    };
    let paths: Vec<PathBuf> = match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => vec![PathBuf::from(p)],
        _ => os_shim::qemu_socket::default_paths().collect(),
    };
    let Some((stream, path)) = connect_first(&paths) else {
        eprintln!(
            "qrap: no passt is waiting for a guest at {}{}",
            paths[0].display(),
            if paths.len() > 1 {
                format!(" ... {}", paths[paths.len() - 1].display())
            } else {
                String::new()
            }
        );
        return EXIT_FAILURE;
    };
    eprintln!("Connected to {}", path.display());
    if let Err(e) = place(stream.as_raw_fd(), fdnum) {
        eprintln!("qrap: cannot make the connection descriptor {fdnum}: {e}");
        return EXIT_FAILURE;
    }
    let e = exec(&args[2..]);
    eprintln!("qrap: cannot run {}: {e}", args[2].to_string_lossy());
    EXIT_FAILURE
}

fn parse_fd(arg: &OsString) -> Result<RawFd, String> {
    match arg.to_str().and_then(|s| s.parse::<RawFd>().ok()) {
        Some(n) if n > 2 => Ok(n),
        _ => Err(format!(
            "'{}' is not a descriptor number above 2",
            arg.to_string_lossy()
        )),
    }
}

/// The first path with a passt that keeps our connection.
fn connect_first(paths: &[PathBuf]) -> Option<(UnixStream, PathBuf)> {
    for path in paths {
        let Ok(stream) = UnixStream::connect(path) else {
            continue;
        };
        if closed_soon(&stream) {
            eprintln!("qrap: {} is busy with another guest", path.display());
            continue;
        }
        return Some((stream, path.clone()));
    }
    None
}

/// Whether the peer closes the connection within [`BUSY_WAIT`] (data from it means it is
/// serving us).
fn closed_soon(stream: &UnixStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd of ours.
    let r = unsafe { libc::poll(&mut pfd, 1, BUSY_WAIT.as_millis() as i32) };
    if r <= 0 {
        return false;
    }
    let mut b = [0u8; 1];
    // SAFETY: peeks one byte into our buffer.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n <= 0
}

/// Makes `fd` available as `target` in the program we exec (the original closes on exec).
fn place(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: descriptor juggling on our own descriptors.
    let r = unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Replaces this process with `argv`, looked up in PATH; returns only on failure.
fn exec(argv: &[OsString]) -> io::Error {
    let cargs: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(cargs) = cargs else {
        return io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte");
    };
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and a NULL-terminated array that outlive the call.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_numbers() {
        assert_eq!(parse_fd(&"5".into()), Ok(5));
        assert!(parse_fd(&"2".into()).is_err());
        assert_eq!(
            parse_fd(&"x".into()).unwrap_err(),
            "'x' is not a descriptor number above 2"
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(main_with_args(vec!["qrap".into()]), EXIT_FAILURE);
        assert_eq!(
            main_with_args(vec!["qrap".into(), "1".into(), "true".into()]),
            EXIT_FAILURE
        );
    }
}
