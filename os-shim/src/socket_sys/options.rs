//! Socket options and ioctls, as integers.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

/// Options every data socket gets: no Nagle delay (the guest already decided how to segment).
#[inline]
pub(crate) fn prepare_stream(fd: RawFd) {
    let _ = setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
}

/// Makes closing `fd` reset the connection (a zero linger time) rather than end it.
#[inline]
pub(crate) fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a struct linger of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

#[inline]
pub(crate) fn setsockopt_int(fd: RawFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a valid int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[inline]
pub(crate) fn getsockopt_int(fd: RawFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into our int.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (&mut value as *mut i32).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

#[inline]
pub(crate) fn so_error(fd: RawFd) -> i32 {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
        .unwrap_or_else(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

#[inline]
pub(crate) fn ioctl_int(fd: RawFd, request: libc::c_ulong) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    // SAFETY: SIOCINQ/SIOCOUTQ write one int.
    if unsafe { libc::ioctl(fd, request as _, &mut value) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

#[inline]
pub(crate) fn readable_bytes(fd: RawFd) -> io::Result<usize> {
    ioctl_int(fd, libc::FIONREAD).map(|n| n.max(0) as usize)
}
