//! What the kernel says about a TCP socket: `SO_MEMINFO` (send buffer memory) and `SIOCOUTQ`
//! (payload queued), and the free send space we derive from them; `TCP_INFO`'s state, for
//! the end of the stream where peeking can't tell it.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use super::{getsockopt_int, ioctl_int};

/// `SO_MEMINFO` (Linux 4.6), where the architecture numbers it like asm-generic does.
const SO_MEMINFO: Option<i32> = if cfg!(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "s390x"
)) {
    Some(55)
} else {
    None
};

/// The socket's send buffer size and what its queue takes of it, in the kernel's accounting
/// (buffer memory, "truesize", not payload).
#[inline]
fn send_memory(fd: RawFd) -> Option<(u32, u32)> {
    let opt = SO_MEMINFO?;
    let mut info = [0u32; 16];
    let mut len = size_of::<[u32; 16]>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into our array.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let needed = (libc::SK_MEMINFO_WMEM_QUEUED as usize + 1) * size_of::<u32>();
    (rc == 0 && len as usize >= needed).then(|| {
        (
            info[libc::SK_MEMINFO_SNDBUF as usize],
            info[libc::SK_MEMINFO_WMEM_QUEUED as usize],
        )
    })
}

/// Payload bytes a send could take now, conservatively. The kernel takes data while the
/// memory its send queue uses (`sk_wmem_queued`) is below the buffer size (`sk_sndbuf`), and
/// that memory is more than the payload: each buffer has a fixed overhead (about 1 KiB), so
/// bulk data written at high rates (64 KiB buffers) costs barely more than its size, at low
/// rates (two segments per buffer) about 1.5 times, and a lone byte a whole kilobyte. The free
/// memory is converted to payload at the payload-to-memory ratio of what is queued now, but at
/// least one half (the ratio of a queue holding a few tiny writes says nothing about the next
/// ones, and would shut the guest's window for interactive traffic), and at one half with an
/// empty queue. Without `SO_MEMINFO`: half of `SO_SNDBUF` less what is queued.
///
/// One `getsockopt` (`SO_MEMINFO`), and an `ioctl` (`SIOCOUTQ`, the payload queued) only
/// where the ratio needs it: a queue holding something, and memory free. Nothing is cached:
/// the kernel moves `sk_sndbuf` as it autotunes (up with the congestion window, down under
/// memory pressure), and `SO_MEMINFO` reads it with the queue at no extra cost.
#[inline]
pub(crate) fn send_space(fd: RawFd) -> io::Result<u32> {
    match send_memory(fd) {
        Some((sndbuf, queued)) => {
            let unacked = if queued > 0 && sndbuf > queued {
                queued_payload(fd)?
            } else {
                0
            };
            Ok(payload_space(sndbuf, queued, unacked))
        }
        None => {
            let sndbuf = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?.max(0) as u32;
            Ok((sndbuf / 2).saturating_sub(queued_payload(fd)?))
        }
    }
}

/// Payload bytes in the send queue, sent or not, not yet acknowledged (`SIOCOUTQ`).
#[inline]
fn queued_payload(fd: RawFd) -> io::Result<u32> {
    Ok(ioctl_int(fd, libc::TIOCOUTQ)?.max(0) as u32)
}

/// [`send_space`]'s arithmetic: the free part of `sndbuf` (memory) as payload.
#[inline]
fn payload_space(sndbuf: u32, queued: u32, unacked: u32) -> u32 {
    let free = u64::from(sndbuf.saturating_sub(queued));
    let (num, den) = if queued > 0 && u64::from(unacked) * 2 > u64::from(queued) {
        (u64::from(unacked.min(queued)), u64::from(queued))
    } else {
        (1, 2)
    };
    (free * num / den) as u32
}

/// Whether the peer's FIN arrived (TCP_INFO state past ESTABLISHED on the receive side).
#[inline]
pub(crate) fn at_eof(fd: RawFd) -> bool {
    const TCP_CLOSE_WAIT: u8 = 8;
    const TCP_LAST_ACK: u8 = 9;
    const TCP_CLOSING: u8 = 11;
    const TCP_CLOSE: u8 = 7;
    const TCP_TIME_WAIT: u8 = 6;
    // `struct tcp_info` begins with the state byte; the kernel copies as much as we ask for.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into our array.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    rc == 0
        && len >= 1
        && matches!(
            info[0],
            TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_CLOSE | TCP_TIME_WAIT
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_space_arithmetic() {
        // Empty queue: half the buffer.
        assert_eq!(payload_space(100_000, 0, 0), 50_000);
        // The kernel may report bytes still unacknowledged with no memory charged.
        assert_eq!(payload_space(100_000, 0, 10), 50_000);
        // Bulk: 60 000 bytes in 64 000 of memory; the free 36 000 hold as much, pro rata.
        assert_eq!(payload_space(100_000, 64_000, 60_000), 33_750);
        // A lone byte in a kilobyte: no worse than one half.
        assert_eq!(payload_space(100_000, 1_000, 1), 49_500);
        // Over budget (the kernel lets one buffer overshoot): nothing.
        assert_eq!(payload_space(100_000, 120_000, 110_000), 0);
        assert_eq!(payload_space(u32::MAX, 1, u32::MAX), u32::MAX - 1);
    }
}
