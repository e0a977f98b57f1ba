//! pasta's tap device: an Ethernet interface in the target namespace whose frames we read and
//! write through `/dev/net/tun`.

use std::cell::Cell;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::netlink::errno_text;
use crate::ns::{in_netns, NsError};

mod queue;

use crate::vnet_hdr::{self as vnet, VnetHeader};
pub use queue::TapStats;

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Each frame read or written is preceded by a `struct virtio_net_hdr`.
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `TUNSETVNETHDRSZ`: `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// What the namespace may send us: checksums left unfinished (`TUN_F_CSUM`), TCP segments of
/// up to 64 KiB whatever its MTU (`TUN_F_TSO4`, `TUN_F_TSO6`), which the engine takes whole
/// (a segment's size is not the link's business, and it never reads transport checksums),
/// and runs of UDP datagrams a socket sent with `UDP_SEGMENT` (`TUN_F_USO4`, `TUN_F_USO6`:
/// Linux 6.2 and later), which the data path cuts apart: one read for up to 64 datagrams
/// rather than one each, after the kernel cut them in software.
const OFFLOADS_TOWARDS_US: libc::c_ulong = OFFLOADS_BEFORE_USO | 0x20 | 0x40;
/// What a kernel without UDP segmentation for the tap takes (it refuses the whole set).
const OFFLOADS_BEFORE_USO: libc::c_ulong = 0x01 | 0x02 | 0x04;
const TUN_PATH: &str = "/dev/net/tun";

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid tap device name '{name}': {why}")]
    BadName { name: String, why: &'static str },
    #[error("cannot open {TUN_PATH}: {}{}", errno_text(*errno), open_hint(*errno))]
    OpenTun { errno: i32 },
    #[error("cannot create tap device {name}: {}{}", errno_text(*errno), iff_hint(*errno))]
    Create { name: String, errno: i32 },
    #[error("tap device {name}: {what}: {}", errno_text(*errno))]
    Device {
        name: String,
        what: &'static str,
        errno: i32,
    },
    #[error(transparent)]
    Ns(#[from] NsError),
}

fn open_hint(errno: i32) -> &'static str {
    match errno {
        libc::EACCES | libc::EPERM => {
            " (/dev/net/tun must be accessible to the user: distributions ship it with mode 0666)"
        }
        libc::ENOENT | libc::ENODEV | libc::ENXIO => " (is the tun module loaded?)",
        _ => "",
    }
}

fn iff_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => " (CAP_NET_ADMIN over the namespace is needed: join its user namespace)",
        libc::EBUSY => " (the device is in use)",
        libc::EINVAL => " (a device of another kind has that name?)",
        _ => "",
    }
}

/// `struct ifreq` as far as `TUNSETIFF` uses it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap device: non-blocking, close-on-exec, one Ethernet frame per read or write,
/// each behind a virtio-net header (`IFF_VNET_HDR`), through which a write may carry a run of
/// datagrams for the kernel to cut apart ([`Tap::write_queue`]) or a frame whose transport
/// checksum the kernel finishes. Towards us, TCP segmentation and checksum offload: a frame
/// read may be a TCP segment of up to 64 KiB and carry an unfinished checksum.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    /// The kinds of run the kernel refused to segment (datagrams, before Linux 6.2): those go
    /// frame by frame.
    refused: Vec<sans_io::wire::gso::Transport>,
    stats: TapStats,
    /// Frames read that the namespace left for a device to segment (TSO).
    segments_in: Cell<u64>,
    /// Frames read that were runs of UDP datagrams (USO), and whether the kernel took our
    /// offer of those.
    udp_runs_in: Cell<u64>,
    uso: bool,
}

/// A frame [`Tap::read_frame`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadFrame {
    pub len: usize,
    /// The frame is a run of UDP datagrams of this payload size (the last maybe shorter)
    /// that the namespace left for a device to cut apart: see
    /// [`sans_io::wire::gso::cut_udp_run`].
    pub udp_segment_size: Option<u16>,
}

impl ReadFrame {
    /// A frame that is just itself.
    pub fn whole(len: usize) -> ReadFrame {
        ReadFrame {
            len,
            udp_segment_size: None,
        }
    }
}

impl Tap {
    /// Creates (or attaches to) the tap device `name` in the network namespace `netns`, from
    /// a thread in it (see [`in_netns`]; unprivileged, join the user namespace first). An
    /// empty name lets the kernel choose one (`tap0`, ...). The device starts down: bring it up
    /// with [`crate::nsconf::configure`].
    pub fn open_in(netns: impl AsFd, name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        in_netns(netns, || Tap::open_here(name))?
    }

    /// Like [`Tap::open_in`], in the calling thread's network namespace.
    pub fn open_here(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        // SAFETY: valid C string; the fd is ours.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(TapError::OpenTun {
                errno: last_errno(),
            });
        }
        // SAFETY: just opened.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        for (dst, &src) in req.name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `req` is laid out as.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            return Err(TapError::Create {
                name: name.to_owned(),
                errno: last_errno(),
            });
        }
        let hdr_len = vnet::HEADER_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr_len) } < 0 {
            return Err(TapError::Device {
                name: name.to_owned(),
                what: "setting its virtio-net header's size",
                errno: last_errno(),
            });
        }
        // SAFETY: TUNSETOFFLOAD takes its flags by value. A kernel that refuses them sends
        // plain frames, which is what we take anyway.
        let offload = |flags: libc::c_ulong| unsafe {
            libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, flags) == 0
        };
        let uso = offload(OFFLOADS_TOWARDS_US);
        if !uso && !offload(OFFLOADS_BEFORE_USO) {
            log::info!(
                "tap device {name}: no segmentation offload from the namespace ({})",
                errno_text(last_errno())
            );
        }
        // The kernel wrote the actual name back (it chose one if we gave none).
        // SAFETY: the kernel NUL-terminates names within IFNAMSIZ.
        let actual = unsafe { CStr::from_ptr(req.name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(req.name.as_ptr()) };
        if ifindex == 0 {
            return Err(TapError::Device {
                name: actual,
                what: "looking up its index",
                errno: last_errno(),
            });
        }
        Ok(Tap {
            fd,
            name: actual,
            ifindex,
            refused: Vec::new(),
            stats: TapStats::default(),
            segments_in: Cell::new(0),
            udp_runs_in: Cell::new(0),
            uso,
        })
    }

    /// The interface name, as the kernel has it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index in the namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// What went out through [`Tap::write_queue`], and the TSO frames read.
    pub fn stats(&self) -> TapStats {
        TapStats {
            segments_in: self.segments_in.get(),
            udp_runs_in: self.udp_runs_in.get(),
            uso_offered: self.uso,
            ..self.stats
        }
    }

    /// Reads one frame into `buf` (make it at least 64 KiB + 14 bytes, what a segmented frame
    /// may hold: a longer frame is truncated). `WouldBlock` when none is waiting.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<ReadFrame> {
        let mut hdr = [0u8; vnet::HEADER_LEN];
        let iov = [iovec_mut(&mut hdr), iovec_mut(buf)];
        loop {
            // SAFETY: reads into our buffers, which the iovecs describe.
            let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n >= 0 {
                // All the header says that we use is whether the frame is a run of datagrams
                // to cut, and that we note, whether it is a TSO segment (the engine takes its
                // payload whole and never reads checksums).
                let udp_segment_size = match vnet::gso(&hdr, u16::from_ne_bytes) {
                    vnet::Gso::UdpRun(size) => {
                        self.udp_runs_in.set(self.udp_runs_in.get() + 1);
                        Some(size)
                    }
                    vnet::Gso::Other => {
                        self.segments_in.set(self.segments_in.get() + 1);
                        None
                    }
                    vnet::Gso::None => None,
                };
                return Ok(ReadFrame {
                    len: (n as usize).saturating_sub(vnet::HEADER_LEN),
                    udp_segment_size,
                });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes one frame, complete as it is. A frame the kernel refuses (EINVAL: shorter than
    /// an Ethernet header or too long; EIO: the device is down) is an error for this frame
    /// only: the device stays usable.
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        self.write_parts(&VnetHeader::default(), &[frame])
    }

    /// Writes one frame made of `parts` behind `header`.
    fn write_parts(&self, header: &VnetHeader, parts: &[&[u8]]) -> io::Result<()> {
        let header = header.bytes();
        let mut iov = [iovec(&[]); queue::MAX_PARTS + 1];
        iov[0] = iovec(&header);
        for (slot, part) in iov[1..].iter_mut().zip(parts) {
            *slot = iovec(part);
        }
        let count = parts.len().min(queue::MAX_PARTS) + 1;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        loop {
            // SAFETY: the kernel only reads from the buffers the iovecs describe.
            let n =
                unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), count as libc::c_int) };
            if n >= 0 {
                let n = (n as usize).saturating_sub(vnet::HEADER_LEN);
                if n != len {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("tap accepted {n} bytes of a {len}-byte frame"),
                    ));
                }
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn iovec(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }
}

fn iovec_mut(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn check_name(name: &str) -> Result<(), TapError> {
    let bad = |why| {
        Err(TapError::BadName {
            name: name.to_owned(),
            why,
        })
    };
    if name.len() >= libc::IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("not a valid interface name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("contains '/', ':', whitespace or NUL");
    }
    Ok(())
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("tap0").is_ok());
        assert!(check_name("").is_ok());
        assert!(check_name("123456789012345").is_ok());
        let err = check_name("1234567890123456").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid tap device name '1234567890123456': longer than 15 bytes"
        );
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("..").is_err());
    }

    #[test]
    fn messages() {
        let e = TapError::OpenTun {
            errno: libc::EACCES,
        };
        assert!(
            e.to_string().starts_with(
                "cannot open /dev/net/tun: Permission denied (/dev/net/tun must be accessible"
            ),
            "{e}"
        );
        let e = TapError::Create {
            name: "eth0".into(),
            errno: libc::EPERM,
        };
        assert!(
            e.to_string()
                .starts_with("cannot create tap device eth0: Operation not permitted"),
            "{e}"
        );
    }

    #[test]
    fn ifreq_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
