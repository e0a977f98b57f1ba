//! Thin, stateless wrappers over the socket system calls of the shim: making, binding and
//! connecting sockets ([`create`]), socket options and ioctls ([`options`]), `sockaddr`
//! conversion ([`sockaddr`]), and what `TCP_INFO` and `SO_MEMINFO` tell ([`tcp_info`]).
//! The engine's host sockets (`crate::sockets`) and the loopback relays (`crate::splice`,
//! `crate::dgram_relay`) build on them; nothing here knows about epoll or the core.
//!
//! Every function here is `#[inline]`: they sit on the data path, a few per segment, and as
//! calls into another module (where they moved from `crate::sockets`) they cost a sixth of
//! the bench's host-to-namespace TCP throughput (`tcp4_tap_in`, 11.7 against 9.9 Gbit/s).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

pub(crate) mod create;
pub(crate) mod options;
pub(crate) mod sockaddr;
pub(crate) mod tcp_info;
pub(crate) mod udp_gro;
pub(crate) mod udp_gso;

pub(crate) use create::*;
pub(crate) use options::*;
pub(crate) use sockaddr::*;

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) has no descriptor left.
#[inline]
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The errno of an I/O error, EIO when it has none (for errors carried as `Errno`).
pub(crate) fn errno_of(e: &io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Runs a system call again while it is interrupted (`EINTR`); a negative result is the
/// errno's error.
#[inline]
pub(crate) fn retry(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = f();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One send from `data` that doesn't block, and doesn't raise SIGPIPE on a closed connection.
#[inline]
pub(crate) fn send_nonblocking(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: sends from our slice.
    retry(|| unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// One datagram from `data` to `to`, as [`send_nonblocking`] sends.
#[inline]
pub(crate) fn send_to_nonblocking(fd: RawFd, data: &[u8], to: &SocketAddr) -> io::Result<usize> {
    let (sa, len) = std_to_sockaddr(to);
    // SAFETY: sends from our slice to our address, both outliving the call.
    retry(|| unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
}

/// Slices gathered into one `sendmsg` at most.
const IOV_BATCH: usize = 64;

/// The slices of `data` sent in order with one `sendmsg` (per [`IOV_BATCH`] slices), from
/// where they are: no copy. Returns the bytes sent over all slices; an error only if none went.
#[inline]
pub(crate) fn send_vectored_nonblocking(fd: RawFd, data: &[&[u8]]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in data.chunks(IOV_BATCH) {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOV_BATCH];
        for (v, slice) in iov.iter_mut().zip(chunk) {
            v.iov_base = slice.as_ptr().cast_mut().cast();
            v.iov_len = slice.len();
        }
        let wanted: usize = chunk.iter().map(|s| s.len()).sum();
        // SAFETY: the iovecs point at slices alive for the call.
        let n = match unsafe { send_iovec_nonblocking(fd, &iov[..chunk.len()]) } {
            Ok(n) => n,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        };
        sent += n;
        if n < wanted {
            break;
        }
    }
    Ok(sent)
}

/// `iov` sent in order with one `sendmsg` ([`SEND_IOV_MAX`] entries at most): the bytes sent.
///
/// # Safety
///
/// Every iovec must point at memory valid for reads of its length for the call.
#[inline]
pub(crate) unsafe fn send_iovec_nonblocking(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    debug_assert!(iov.len() <= SEND_IOV_MAX);
    // SAFETY: a zeroed msghdr is valid; it only points at the iovecs, which point at memory
    // the caller vouches for, only read by the kernel.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: as above.
    retry(|| unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) })
}

/// Iovec entries one `sendmsg` takes (UIO_MAXIOV).
pub(crate) const SEND_IOV_MAX: usize = 1024;

/// A destination as the system calls take it (see [`std_to_sockaddr`]).
pub(crate) type RawSockAddr = (libc::sockaddr_storage, libc::socklen_t);

/// The `datagrams` sent in order to `to` (on a connected socket, `None`), each as one
/// datagram, with one `sendmmsg` (per [`IOV_BATCH`] of them), from where they are. Returns how
/// many went, stopping at the first that failed; an error only if none went.
#[inline]
pub(crate) fn send_datagrams_nonblocking(
    fd: RawFd,
    datagrams: &[&[u8]],
    to: Option<&RawSockAddr>,
) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in datagrams.chunks(IOV_BATCH) {
        // SAFETY: plain old data; zero is a valid (empty) value.
        let mut iov: [libc::iovec; IOV_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; IOV_BATCH] = unsafe { std::mem::zeroed() };
        for (k, datagram) in chunk.iter().enumerate() {
            iov[k] = libc::iovec {
                iov_base: datagram.as_ptr().cast_mut().cast(),
                iov_len: datagram.len(),
            };
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            if let Some((sa, len)) = to {
                msgs[k].msg_hdr.msg_name = (sa as *const libc::sockaddr_storage).cast_mut().cast();
                msgs[k].msg_hdr.msg_namelen = *len;
            }
        }
        // SAFETY: every message points at a datagram (and an address) that outlives the
        // call; the kernel only reads them.
        let n = match retry(|| unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            ) as isize
        }) {
            Ok(n) => n,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        };
        sent += n;
        if n < chunk.len() {
            break;
        }
    }
    Ok(sent)
}
