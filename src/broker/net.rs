//! Sockets: listeners built with socket2 (backlog, `SO_REUSEPORT`, non-blocking) and the
//! handful of file-descriptor operations glommio 0.9 has no safe API for.
//!
//! This file is the broker's unsafe island, and each block says why it holds:
//! - glommio's `TcpListener::bind` fixes the backlog and unwraps address errors, so
//!   listeners are built with socket2 and handed over with `from_raw_fd`;
//! - a connection moves to its session's home shard after CONNECT; glommio 0.9 cannot
//!   move a bound `TcpStream`, so the socket is duplicated (`dup`), the original closed on
//!   the accepting shard, and the duplicate adopted on the home shard;
//! - a takeover shuts down the old connection's socket while its task still owns it;
//! - keep alive asks a socket how many received bytes wait unread.

#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog: connection bursts (benchmarks open thousands at once) must not be
/// refused by the kernel.
const BACKLOG: i32 = 4096;

/// A listening socket, non-blocking, optionally with `SO_REUSEPORT` so that every shard
/// can bind the same address.
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Hands a listener to the calling shard's executor.
pub(crate) fn listener(l: std::net::TcpListener) -> TcpListener {
    // SAFETY: `into_raw_fd` gives up ownership of a valid listening socket; glommio's
    // listener takes it over and closes it on drop. Nothing else refers to the fd.
    unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }
}

/// A duplicate of the connection's socket, to move it to another shard. The caller drops
/// the original afterwards, which releases the accepting shard's reactor registrations.
pub(crate) fn dup(stream: &TcpStream) -> io::Result<OwnedFd> {
    // SAFETY: the fd belongs to `stream`, which is alive for the whole borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    fd.try_clone_to_owned()
}

/// Adopts a moved socket on the calling shard's executor.
pub(crate) fn adopt(fd: OwnedFd) -> TcpStream {
    // SAFETY: `fd` is an owned, connected TCP socket (from `dup`); ownership passes to the
    // stream, which closes it on drop.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

/// Shuts a connection's socket down in both directions (takeover). The fd is owned by a
/// live connection task; callers check `ConnShared::open` first so the number cannot name
/// another file by now.
pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: `shutdown(2)` on an fd only affects the socket; an invalid fd gives EBADF,
    // which is ignored. Callers guarantee the fd is still the connection's socket.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Writes `bytes` to a connection's socket at once, without waiting (the connection task
/// owns the socket and may be parked); true when the kernel took them all. For the few
/// bytes of a DISCONNECT just before a takeover shuts the socket down: callers make sure
/// no write of the task is under way, so the bytes start at a packet boundary.
pub(crate) fn send_now(fd: RawFd, bytes: &[u8]) -> bool {
    // SAFETY: `send(2)` reads `bytes.len()` bytes from a valid slice; an invalid fd gives
    // EBADF. MSG_NOSIGNAL: a peer that is gone must not raise SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).is_ok_and(|n| n == bytes.len())
}

/// The peer address of a connection's socket (for its log line); None if the call
/// fails. The caller's connection owns `fd` and keeps it open for the call.
pub(crate) fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: the fd is the caller's open socket for the duration of this call, and the
    // borrow does not outlive it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).peer_addr().ok()?.as_socket()
}

/// Bytes received on a connection's socket and not read yet (`SIOCINQ`); 0 when the fd is
/// not a socket any more or the call fails. Used for keep alive: a client whose packets
/// wait unread is alive. Callers check `ConnShared::open` first so the number still names
/// the connection's socket.
pub(crate) fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ for TCP) writes one c_int through the pointer we pass; an
    // invalid fd gives EBADF and leaves `n` at 0.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if r == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Raises `RLIMIT_MEMLOCK` to at least `need` bytes if the hard limit allows (glommio
/// needs 512 KiB per executor for its io_uring rings). Returns the soft limit in force.
pub(crate) fn raise_memlock(need: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < need {
            let new = libc::rlimit {
                rlim_cur: if lim.rlim_max == libc::RLIM_INFINITY {
                    need
                } else {
                    need.min(lim.rlim_max)
                },
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) == 0 {
                lim.rlim_cur = new.rlim_cur;
            }
        }
    }
    Ok(lim.rlim_cur)
}
