//! Runs of datagrams received whole (UDP generic receive offload, `UDP_GRO`, Linux 5.0
//! onwards): a socket that asks gets a peer's run (sent with `UDP_SEGMENT`, or merged by a
//! device on receipt) as one buffer of equal-sized datagrams, the last maybe shorter, with
//! their size in a control message. Its receive buffers must hold 64 KiB, or the rest of a run
//! is lost. What receives them: the engine's flow sockets (`crate::sockets::udp_gro`) and the
//! loopback relay (`crate::dgram_relay`).

use std::mem::size_of;
use std::os::fd::RawFd;

/// `UDP_GRO` (linux/udp.h): the socket option, and the control message carrying a run's
/// datagram size.
const UDP_GRO: libc::c_int = 104;

/// A control message buffer for a receive: room for the run's datagram size (an `int`),
/// aligned for `cmsghdr`.
pub(crate) type GroControl = [u64; 4];

/// Asks the kernel for runs on `fd`; false where it has no `UDP_GRO`.
#[inline]
pub(crate) fn enable_gro(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: plain setsockopt with an int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Points `hdr` at `control` for a receive that may bring a run's datagram size.
#[inline]
pub(crate) fn expect_gro_control(hdr: &mut libc::msghdr, control: &mut GroControl) {
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = size_of::<GroControl>() as _;
}

/// The datagram size of the run a message brought, if it brought one: from its `UDP_GRO`
/// control message, when that is smaller than the message (a run of one is a datagram).
///
/// # Safety
///
/// `hdr` is a message `recvmsg` filled, its control buffer still there.
#[inline]
pub(crate) unsafe fn gro_segment(hdr: &libc::msghdr, len: usize) -> Option<usize> {
    let mut c = libc::CMSG_FIRSTHDR(hdr);
    while !c.is_null() {
        if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
            let value = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
            return usize::try_from(value).ok().filter(|&s| s > 0 && s < len);
        }
        c = libc::CMSG_NXTHDR(hdr, c);
    }
    None
}

/// How many datagrams a message of `len` bytes in datagrams of `segment` holds (one when it
/// is no run).
#[inline]
pub(crate) fn datagrams_in(len: usize, segment: usize) -> usize {
    if segment == 0 || segment >= len {
        1
    } else {
        len.div_ceil(segment)
    }
}
