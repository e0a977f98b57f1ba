//! Making sockets: non-blocking and close-on-exec, bound and connected as the shim needs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use sans_io::flow::Bind;

use super::{in_family_of, setsockopt_int, std_to_sockaddr};

/// Backlog of listening sockets (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

/// A non-blocking, close-on-exec socket of `addr`'s family.
#[inline]
fn new_socket(addr: IpAddr, kind: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain system call.
    let fd = unsafe {
        libc::socket(
            domain,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A datagram socket for `proto` (UDP, ICMP "ping").
#[inline]
pub(crate) fn dgram_socket(addr: IpAddr, proto: libc::c_int) -> io::Result<OwnedFd> {
    new_socket(addr, libc::SOCK_DGRAM, proto)
}

#[inline]
pub(crate) fn stream_socket(addr: IpAddr) -> io::Result<OwnedFd> {
    new_socket(addr, libc::SOCK_STREAM, libc::IPPROTO_TCP)
}

/// `connect(2)` to `addr`; for a non-blocking stream socket, `EINPROGRESS` comes back as the
/// error it is.
#[inline]
pub(crate) fn connect_to(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = std_to_sockaddr(&addr);
    // SAFETY: a valid sockaddr of the given length.
    let rc = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[inline]
pub(crate) fn listen_socket(
    addr: SocketAddr,
    iface: Option<&str>,
    freebind: bool,
) -> io::Result<OwnedFd> {
    let fd = stream_socket(addr.ip())?;
    bind_shared(fd.as_raw_fd(), addr, iface, freebind)?;
    // SAFETY: plain system call.
    if unsafe { libc::listen(fd.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A UDP socket bound to `addr`, sharing it: a forwarding listener, or a flow's reply socket
/// beside one.
#[inline]
pub(crate) fn udp_bound_socket(
    addr: SocketAddr,
    iface: Option<&str>,
    freebind: bool,
) -> io::Result<OwnedFd> {
    let fd = dgram_socket(addr.ip(), libc::IPPROTO_UDP)?;
    bind_shared(fd.as_raw_fd(), addr, iface, freebind)?;
    Ok(fd)
}

/// A socket for the answers to `peer` of forwarding socket `local` (on `iface`): bound beside
/// it (address reuse) and connected to `peer`, so that the peer's next datagrams come to it
/// rather than to the forwarding socket, and answers leave from the address it wrote to.
#[inline]
pub(crate) fn udp_reply_socket(
    local: SocketAddr,
    iface: Option<&str>,
    peer: SocketAddr,
) -> io::Result<OwnedFd> {
    let fd = udp_bound_socket(local, iface, false)?;
    connect_to(fd.as_raw_fd(), in_family_of(local, peer))?;
    Ok(fd)
}

/// Binds a forwarding socket: address reuse, IPv6 only for IPv6 (IPv4 has sockets of its
/// own), free binding and the interface as asked.
#[inline]
fn bind_shared(
    raw: RawFd,
    addr: SocketAddr,
    iface: Option<&str>,
    freebind: bool,
) -> io::Result<()> {
    setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    if freebind {
        let (level, opt) = if addr.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_FREEBIND)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND)
        };
        setsockopt_int(raw, level, opt, 1)?;
    }
    if let Some(iface) = iface {
        bind_to_device(raw, iface)?;
    }
    bind_addr(raw, addr)
}

/// Binds an outbound socket as `-o`/`--outbound-if*` ask: to the interface, and to the
/// address if it is of `dst`'s family (any port).
#[inline]
pub(crate) fn bind_outbound(fd: RawFd, bind: Bind<'_>, dst: SocketAddr) -> io::Result<()> {
    if let Some(iface) = bind.iface {
        bind_to_device(fd, iface)?;
    }
    match bind.addr {
        Some(addr) if addr.is_ipv4() == dst.is_ipv4() => bind_addr(fd, SocketAddr::new(addr, 0)),
        _ => Ok(()),
    }
}

#[inline]
pub(crate) fn bind_addr(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = std_to_sockaddr(&addr);
    // SAFETY: a valid sockaddr of the given length.
    if unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[inline]
pub(crate) fn bind_to_device(fd: RawFd, iface: &str) -> io::Result<()> {
    // SAFETY: the option value is the name's bytes, with its length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr().cast(),
            iface.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking, close-on-exec UNIX stream socket (qemu's socket, the control socket).
pub(crate) fn unix_stream_socket() -> Result<OwnedFd, nix::errno::Errno> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}
