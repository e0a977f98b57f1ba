//! The control socket's Linux side (`-c, --conf-path PATH`, which `pesto` talks to): the
//! listening UNIX socket, made as the C original makes it but reachable only by its owner,
//! and the non-blocking calls the server in `bins` makes on it and on its client. What goes
//! over it is `sans_io::control`'s.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{self as sock, sockopt, Backlog};
use nix::sys::socket::{UnixAddr, UnixCredentials};

use crate::socket_sys::{errno_of, unix_stream_socket};

/// Why the control socket could not be made. The first two texts are the C original's.
#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    #[error("Invalid configuration path: {}", .0.display())]
    InvalidPath(PathBuf),
    #[error("Socket path {} already in use", .0.display())]
    InUse(PathBuf),
    #[error("configuration socket {}: {what}: {errno}", path.display())]
    Sys {
        path: PathBuf,
        what: &'static str,
        errno: Errno,
    },
}

/// Creates the listening socket at `path`, as the C original does: a test connection first,
/// and a path somebody answers on (or that fails other than "nothing there", "nobody
/// listens" or "not allowed") is refused; otherwise the path is unlinked and bound. The file
/// is made mode 0600 before `listen`, so only its owner (and root) can connect: stricter than
/// the original, which leaves it to the umask.
pub fn bind(path: &Path) -> Result<OwnedFd, ControlSocketError> {
    let sys = |what, errno| ControlSocketError::Sys {
        path: path.to_owned(),
        what,
        errno,
    };
    let addr = UnixAddr::new(path).map_err(|_| ControlSocketError::InvalidPath(path.into()))?;
    let probe = unix_stream_socket().map_err(|e| sys("socket", e))?;
    match sock::connect(probe.as_raw_fd(), &addr) {
        Err(Errno::ENOENT | Errno::ECONNREFUSED | Errno::EACCES) => {}
        _ => return Err(ControlSocketError::InUse(path.to_owned())),
    }
    drop(probe);
    // Stricter than the original, which would unlink anything there: only a socket file.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(sys("not a socket, not replacing it", Errno::EEXIST));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sys("unlink", errno_of(&e))),
    }
    let fd = unix_stream_socket().map_err(|e| sys("socket", e))?;
    sock::bind(fd.as_raw_fd(), &addr).map_err(|e| match e {
        Errno::EADDRINUSE => ControlSocketError::InUse(path.to_owned()),
        e => sys("bind", e),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| sys("chmod", errno_of(&e)))?;
    // The C original's backlog is 0; waiting clients queue until the current one is done.
    sock::listen(&fd, Backlog::new(8).unwrap_or(Backlog::MAXCONN)).map_err(|e| sys("listen", e))?;
    Ok(fd)
}

/// Accepts one waiting client (non-blocking, close-on-exec); `None` when none waits.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        // SAFETY: accept4 without an address; the descriptor it returns is ours alone.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor from accept4.
            return Ok(Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            // The client gave up while waiting: as good as none.
            Some(libc::ECONNABORTED) => continue,
            _ => return Err(e),
        }
    }
}

/// Who is at the other end (`SO_PEERCRED`): for the log only, nothing is decided on it.
pub fn peer(fd: BorrowedFd<'_>) -> Option<UnixCredentials> {
    sock::getsockopt(&fd, sockopt::PeerCredentials).ok()
}

/// A non-blocking read: `Ok(None)` when nothing is there yet, `Ok(Some(0))` at the end.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A non-blocking write that raises no `SIGPIPE`: how much went, 0 when the socket is full.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match sock::send(fd.as_raw_fd(), buf, sock::MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ctlsock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ctl.sock")
    }

    #[test]
    fn binds_0600_refuses_a_path_in_use_and_reuses_a_stale_one() {
        let path = temp_path("bind");
        let fd = bind(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let e = bind(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Socket path {} already in use", path.display())
        );
        // Nobody listens any more: the file is stale and taken over.
        drop(fd);
        let fd = bind(&path).unwrap();
        // A client: accepted once, then nothing waits.
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let conn = accept(fd.as_fd()).unwrap().expect("a waiting client");
        assert!(accept(fd.as_fd()).unwrap().is_none());
        let cred = peer(conn.as_fd()).expect("credentials");
        assert_eq!(cred.pid(), std::process::id() as i32);
        assert_eq!(write(conn.as_fd(), b"hi").unwrap(), 2);
        let mut buf = [0; 8];
        assert_eq!(read(conn.as_fd(), &mut buf).unwrap(), None);
        let mut got = [0; 2];
        std::io::Read::read_exact(&mut client, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        drop(client);
        assert_eq!(read(conn.as_fd(), &mut buf).unwrap(), Some(0));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_path_too_long_is_the_c_text() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        let e = bind(&long).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Invalid configuration path: /tmp/x"),
            "{e}"
        );
    }
}
