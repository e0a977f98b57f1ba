//! Noticing that a network namespace bound to the filesystem was deleted.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::NsError;

/// Watches a network namespace bound to the filesystem, so that pasta can quit when it is
/// deleted (`ip netns del`, Podman).
///
/// Where the directory holding it supports inotify (`/run/netns`, `/run/user/UID/netns`),
/// [`NetnsWatch::fd`] is an inotify descriptor for epoll: when readable, call
/// [`NetnsWatch::gone`]. On procfs (`/proc/PID/ns/net`, which inotify can't watch) `fd()` is
/// `None`: call [`NetnsWatch::check`] every second instead. Both compare what the path names
/// with the namespace it named at the start, through a descriptor of its directory, so they
/// keep working after pasta changes its root.
#[derive(Debug)]
pub struct NetnsWatch {
    path: PathBuf,
    dir: OwnedFd,
    name: CString,
    /// (st_dev, st_ino) of the namespace when the watch started.
    id: (u64, u64),
    inotify: Option<OwnedFd>,
}

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

const SYSFS_MAGIC: i64 = 0x6265_6572;

const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

impl NetnsWatch {
    pub fn new(path: &Path) -> Result<NetnsWatch, NsError> {
        let open_err = |p: &Path| {
            let p = p.to_owned();
            move |source| NsError::Open { path: p, source }
        };
        let name = path
            .file_name()
            .ok_or_else(|| NsError::Invalid(format!("{}: no file name", path.display())))?;
        let name = CString::new(name.as_bytes())
            .map_err(|_| NsError::Invalid(format!("{}: NUL in path", path.display())))?;
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let cdir = CString::new(dir_path.as_os_str().as_bytes())
            .map_err(|_| NsError::Invalid(format!("{}: NUL in path", path.display())))?;
        // SAFETY: valid C string; the fd is ours.
        let dir = unsafe {
            libc::open(
                cdir.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dir < 0 {
            return Err(open_err(&dir_path)(io::Error::last_os_error()));
        }
        // SAFETY: just opened.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        let id = stat_at(dir.as_fd(), &name).map_err(open_err(path))?;

        let mut fs = MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: fs is written on success.
        let fs_type = if unsafe { libc::fstatfs(dir.as_raw_fd(), fs.as_mut_ptr()) } == 0 {
            // SAFETY: fstatfs() succeeded.
            // f_type is a word of a different type on some architectures.
            #[allow(clippy::unnecessary_cast)]
            Some(unsafe { fs.assume_init() }.f_type as i64)
        } else {
            None
        };
        let inotify = match fs_type {
            Some(PROC_SUPER_MAGIC | SYSFS_MAGIC | DEVPTS_SUPER_MAGIC) | None => None,
            Some(_) => inotify_watch(&cdir),
        };
        Ok(NetnsWatch {
            path: path.to_owned(),
            dir,
            name,
            id,
            inotify,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The inotify descriptor to add to epoll (readable: call [`NetnsWatch::gone`]); `None`
    /// when the path can't be watched: call [`NetnsWatch::check`] on a 1 s timer.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|fd| fd.as_fd())
    }

    /// Reads the pending inotify events; `true` if one concerned our file (or the directory)
    /// and the namespace is indeed gone. Never blocks.
    pub fn gone(&mut self) -> bool {
        let Some(fd) = &self.inotify else {
            return self.check();
        };
        let mut relevant = false;
        // Aligned for struct inotify_event.
        let mut buf = [0u64; 512];
        loop {
            // SAFETY: reads into our buffer.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n <= 0 {
                break;
            }
            // SAFETY: the kernel wrote n bytes of events.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            relevant |= events_concern(bytes, self.name.as_bytes());
        }
        relevant && self.check()
    }

    /// Whether the namespace is gone: the path no longer exists, or names another file than
    /// at the start. Permission errors (a procfs entry pasta may no longer look at) count as
    /// still there, as in the original.
    pub fn check(&self) -> bool {
        match stat_at(self.dir.as_fd(), &self.name) {
            Ok(id) => id != self.id,
            Err(e) => !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
        }
    }
}

fn stat_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<(u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dir fd and C string; st written on success.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat() succeeded.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

fn inotify_watch(dir: &CString) -> Option<OwnedFd> {
    // SAFETY: plain system calls; the fd is ours.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mask =
            libc::IN_DELETE | libc::IN_DELETE_SELF | libc::IN_MOVED_FROM | libc::IN_MOVE_SELF;
        if libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), mask) < 0 {
            return None;
        }
        Some(fd)
    }
}

/// Whether a buffer of `struct inotify_event`s concerns the file `name` or the directory.
pub(super) fn events_concern(mut bytes: &[u8], name: &[u8]) -> bool {
    const HEADER: usize = 16;
    let mut relevant = false;
    while bytes.len() >= HEADER {
        let mask = u32::from_ne_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let len = u32::from_ne_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        let Some(raw) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        let event_name = raw.split(|&b| b == 0).next().unwrap_or_default();
        let whole_dir = libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_IGNORED
            | libc::IN_Q_OVERFLOW
            | libc::IN_UNMOUNT;
        if mask & whole_dir != 0 || event_name == name {
            relevant = true;
        }
        bytes = &bytes[HEADER + len..];
    }
    relevant
}
