//! The one system call that neither the standard library nor socket2
//! offers: `poll(2)`, used to check an idle connection for bytes nobody
//! asked for, and to read the replies of several servers as they arrive
//! instead of one server after another.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `poll(2)` on `pfds` for up to `millis`, retried when interrupted.
fn poll(pfds: &mut [libc::pollfd], millis: libc::c_int) -> io::Result<()> {
    let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(libc::nfds_t::MAX);
    loop {
        // SAFETY: `pfds` is a live, exclusively borrowed slice of `nfds`
        // initialised `pollfd`s for the duration of the call, as poll(2)
        // requires; the kernel writes only their `revents` fields.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, millis) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// True when `fd` can be read from now, without waiting: bytes, end of
/// file, or an error are pending. One `poll` with a zero timeout (it takes
/// no socket lock, unlike a peeking `recv`), and no allocation.
pub(crate) fn readable_now(fd: RawFd) -> io::Result<bool> {
    let mut pfd = [pollin(fd)];
    poll(&mut pfd, 0)?;
    Ok(pfd.iter().any(|p| p.revents != 0))
}

/// Waits up to `timeout` until one of `fds` can be read from (or has
/// failed or hung up, which a read then reports). Returns, per fd, whether
/// it is ready; all false when the time ran out.
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&fd| pollin(fd)).collect();
    // Round up so that a wait of a few microseconds does not become a
    // busy loop of zero-length polls.
    let millis = timeout.as_micros().div_ceil(1000);
    poll(
        &mut pfds,
        libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX),
    )?;
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}
