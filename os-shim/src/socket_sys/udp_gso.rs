//! Runs of equal-sized datagrams for one connected UDP socket sent as one `sendmsg` with
//! `UDP_SEGMENT` (UDP generic segmentation offload, Linux 4.18 onwards): the stack builds one
//! buffer for the run and cuts it into datagrams at the device (or in software just before
//! it), instead of running every datagram through it. The receiver sees the same datagrams.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use super::{retry, send_datagrams_nonblocking, RawSockAddr};

/// Datagrams in one segmented send at most (the kernel's UDP_MAX_SEGMENTS, 64 before 5.8).
const MAX_SEGMENTS: usize = 64;
/// Payload bytes in one segmented send at most: what one IPv4 or IPv6 packet can carry.
const MAX_BYTES: usize = 65_000;
/// `UDP_SEGMENT` (linux/udp.h), not in every libc.
const UDP_SEGMENT: libc::c_int = 103;

/// What a socket's segmented sends have taught us: sizes from `refused_from` up are sent
/// datagram by datagram (the route's MTU is below them, or the kernel has no UDP_SEGMENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segmentation {
    refused_from: usize,
}

impl Default for Segmentation {
    fn default() -> Self {
        Segmentation {
            refused_from: usize::MAX,
        }
    }
}

/// How many datagrams from the start of `datagrams` can go as one segmented send: the same
/// size as the first (the last may be shorter), within the kernel's bounds; 1 when the first
/// goes alone.
#[inline]
pub(crate) fn run_len(datagrams: &[&[u8]]) -> usize {
    let Some(first) = datagrams.first() else {
        return 0;
    };
    let size = first.len();
    if size == 0 {
        return 1;
    }
    let most = MAX_SEGMENTS.min(MAX_BYTES / size).max(1);
    let mut n = 1;
    while n < most && n < datagrams.len() {
        let len = datagrams[n].len();
        if len == 0 || len > size {
            break;
        }
        n += 1;
        if len < size {
            // A shorter one ends the run.
            break;
        }
    }
    n
}

/// Sends `datagrams` in order to `to` (on a connected socket `fd`, `None`), runs of equal
/// size as one segmented `sendmsg` where `seg` allows (counted in `segmented`), the rest with
/// `sendmmsg`. Returns how many went, stopping at the first that couldn't; an error only if
/// none went.
#[inline]
pub(crate) fn send_datagrams_segmented(
    fd: RawFd,
    datagrams: &[&[u8]],
    to: Option<&RawSockAddr>,
    seg: &mut Segmentation,
    segmented: &mut u64,
) -> io::Result<usize> {
    let mut sent = 0;
    // Datagrams waiting to go one by one, from `sent` on.
    let mut single = 0;
    while sent + single < datagrams.len() {
        let rest = &datagrams[sent + single..];
        let run = run_len(rest);
        let size = rest[0].len();
        if run < 2 || size >= seg.refused_from {
            single += run;
            continue;
        }
        if single > 0 {
            let n = flush(fd, &datagrams[sent..sent + single], to, &mut sent)?;
            if n < single {
                return Ok(sent);
            }
            single = 0;
        }
        match send_segmented(fd, &rest[..run], size, to) {
            Ok(()) => {
                sent += run;
                *segmented += 1;
            }
            Err(e) if refused(&e) => {
                // Not at this size (or not at all): this run and the like go one by one.
                seg.refused_from = if too_large(&e) { size } else { 0 };
                single += run;
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => return Ok(sent),
        }
    }
    if single > 0 {
        flush(fd, &datagrams[sent..], to, &mut sent)?;
    }
    Ok(sent)
}

/// Sends `batch` datagram by datagram, adding to `sent` what went; an error only if nothing
/// went before or now.
fn flush(
    fd: RawFd,
    batch: &[&[u8]],
    to: Option<&RawSockAddr>,
    sent: &mut usize,
) -> io::Result<usize> {
    match send_datagrams_nonblocking(fd, batch, to) {
        Ok(n) => {
            *sent += n;
            Ok(n)
        }
        Err(e) if *sent == 0 => Err(e),
        Err(_) => Ok(0),
    }
}

/// Whether a segmented send failed for being segmented: the size is beyond the route's MTU
/// ([`too_large`]), or the kernel or route can't (ENOPROTOOPT, EOPNOTSUPP, EIO for IPsec).
fn refused(e: &io::Error) -> bool {
    too_large(e)
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EIO)
        )
}

/// A segment of this size doesn't fit the route's MTU (the kernel says EMSGSIZE or EINVAL).
fn too_large(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL))
}

/// One `sendmsg` of `run` to `to` with UDP_SEGMENT `size`: all of it goes, or none.
fn send_segmented(
    fd: RawFd,
    run: &[&[u8]],
    size: usize,
    to: Option<&RawSockAddr>,
) -> io::Result<()> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_SEGMENTS];
    for (v, datagram) in iov.iter_mut().zip(run) {
        v.iov_base = datagram.as_ptr().cast_mut().cast();
        v.iov_len = datagram.len();
    }
    // One control message: SOL_UDP / UDP_SEGMENT with a u16.
    const SPACE: usize = cmsg_space_u16();
    let mut control = [0u64; SPACE.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; it points at our iovecs (the datagrams, only read by
    // the kernel), the address and our control buffer, all alive for the call. CMSG_FIRSTHDR
    // of a control buffer this large is non-null and aligned (u64 storage).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = run.len() as _;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = SPACE as _;
        if let Some((sa, len)) = to {
            msg.msg_name = (sa as *const libc::sockaddr_storage).cast_mut().cast();
            msg.msg_namelen = *len;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
        retry(|| libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL))?;
    }
    Ok(())
}

/// CMSG_SPACE of a u16, at compile time.
const fn cmsg_space_u16() -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(lens: &[usize]) -> Vec<Vec<u8>> {
        lens.iter().map(|&n| vec![0u8; n]).collect()
    }

    fn run_of(lens: &[usize]) -> usize {
        let data = sizes(lens);
        let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        run_len(&refs)
    }

    #[test]
    fn runs_are_equal_sizes_and_a_shorter_last() {
        assert_eq!(run_of(&[]), 0);
        assert_eq!(run_of(&[1400]), 1);
        assert_eq!(run_of(&[1400, 1400, 1400]), 3);
        assert_eq!(run_of(&[1400, 1400, 900, 1400]), 3);
        assert_eq!(run_of(&[1400, 1500, 1400]), 1);
        assert_eq!(run_of(&[0, 0]), 1);
        assert_eq!(run_of(&[1400, 0]), 1);
        assert_eq!(run_of(&[1400; 100]), 46, "65000 bytes at most");
        assert_eq!(run_of(&[100; 100]), 64, "64 datagrams at most");
        assert_eq!(run_of(&[60_000, 60_000]), 1);
    }
}
