//! What the kernel says about a TCP socket: `TCP_INFO` (state, the peer's window) and
//! `SO_MEMINFO` (send buffer memory), and the free send space we derive from them.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use super::getsockopt_int;

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
#[inline]
pub(crate) fn send_space(fd: RawFd, unacked: u32) -> io::Result<u32> {
    match send_memory(fd) {
        Some((sndbuf, queued)) => Ok(payload_space(sndbuf, queued, unacked)),
        None => {
            let sndbuf = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?.max(0) as u32;
            Ok((sndbuf / 2).saturating_sub(unacked))
        }
    }
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
    match tcp_info_raw(fd) {
        Some((info, _)) => matches!(
            info.state,
            TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_CLOSE | TCP_TIME_WAIT
        ),
        None => false,
    }
}

/// `struct tcp_info` up to `tcpi_snd_wnd` (Linux 5.4), the part we read. Older kernels fill
/// less: the returned length says how much.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
}

#[inline]
fn tcp_info_raw(fd: RawFd) -> Option<(TcpInfo, usize)> {
    let mut info = TcpInfo::default();
    let mut len = size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into our struct.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut TcpInfo).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some((info, len as usize))
}

/// The peer's window, when the kernel reports it.
#[inline]
pub(crate) fn snd_wnd(fd: RawFd) -> Option<u32> {
    let (info, len) = tcp_info_raw(fd)?;
    (len >= std::mem::offset_of!(TcpInfo, snd_wnd) + size_of::<u32>()).then_some(info.snd_wnd)
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
