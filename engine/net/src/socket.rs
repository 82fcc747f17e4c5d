//! Opening a UDP socket with RIFT's options (shared by both backends).
//!
//! DSCP EF on IPv4 and IPv6, large buffers (the privileged FORCE variants first), dual-stack
//! when bound to `[::]`, optional SO_REUSEPORT for sharding, optional IP_RECVERR.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::Config;

/// Creates, configures and binds a UDP socket. Option failures that only cost performance are
/// logged at debug level; failing to create or bind is an error.
pub(crate) fn open(addr: SocketAddr, cfg: &Config, reuse_port: bool) -> io::Result<Socket> {
    let v6 = addr.is_ipv6();
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let dual_stack = v6 && addr.ip().is_unspecified();
    if dual_stack {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "IPV6_V6ONLY off failed; [::] serves IPv6 only");
        }
    }
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    set_tos(&socket, v6, dual_stack, cfg.tos);
    set_buffers(&socket, cfg);
    if cfg.icmp_errors {
        set_recverr(&socket, v6, dual_stack);
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

#[cfg(target_os = "linux")]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(target_os = "linux"))]
fn set_reuse_port(_socket: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT sharding is implemented for Linux only",
    ))
}

fn set_tos(socket: &Socket, v6: bool, dual_stack: bool, tos: u8) {
    if !v6 || dual_stack {
        set_tos_v4(socket, tos);
    }
    if v6 {
        set_tclass_v6(socket, tos);
    }
}

// The cfg lists below mirror where socket2 0.6 offers each option.
#[cfg(not(any(
    target_os = "fuchsia",
    target_os = "redox",
    target_os = "solaris",
    target_os = "haiku",
    target_os = "wasi",
)))]
fn set_tos_v4(socket: &Socket, tos: u8) {
    log_err(socket.set_tos_v4(u32::from(tos)), "IP_TOS");
}

#[cfg(any(
    target_os = "fuchsia",
    target_os = "redox",
    target_os = "solaris",
    target_os = "haiku",
    target_os = "wasi",
))]
fn set_tos_v4(_socket: &Socket, _tos: u8) {}

#[cfg(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "fuchsia",
    target_os = "linux",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos",
))]
fn set_tclass_v6(socket: &Socket, tos: u8) {
    log_err(socket.set_tclass_v6(u32::from(tos)), "IPV6_TCLASS");
}

#[cfg(not(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "fuchsia",
    target_os = "linux",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos",
)))]
fn set_tclass_v6(_socket: &Socket, _tos: u8) {}

fn set_buffers(socket: &Socket, cfg: &Config) {
    if !force_buffer(socket, true, cfg.recv_buffer) {
        log_err(socket.set_recv_buffer_size(cfg.recv_buffer), "SO_RCVBUF");
    }
    if !force_buffer(socket, false, cfg.send_buffer) {
        log_err(socket.set_send_buffer_size(cfg.send_buffer), "SO_SNDBUF");
    }
}

/// SO_RCVBUFFORCE / SO_SNDBUFFORCE: beyond `net.core.[rw]mem_max`, needs CAP_NET_ADMIN.
#[cfg(target_os = "linux")]
fn force_buffer(socket: &Socket, recv: bool, bytes: usize) -> bool {
    use std::os::fd::AsFd;
    let name = if recv {
        libc::SO_RCVBUFFORCE
    } else {
        libc::SO_SNDBUFFORCE
    };
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    crate::cmsg::set_int(socket.as_fd(), libc::SOL_SOCKET, name, bytes).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn force_buffer(_socket: &Socket, _recv: bool, _bytes: usize) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn set_recverr(socket: &Socket, v6: bool, dual_stack: bool) {
    use std::os::fd::AsFd;
    let fd = socket.as_fd();
    if !v6 || dual_stack {
        log_err(
            crate::cmsg::set_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1),
            "IP_RECVERR",
        );
    }
    if v6 {
        log_err(
            crate::cmsg::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1),
            "IPV6_RECVERR",
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn set_recverr(_socket: &Socket, _v6: bool, _dual_stack: bool) {}

/// Drains queued ICMP reports (IP_RECVERR) after a transient error surfaced.
#[cfg(target_os = "linux")]
pub(crate) fn drain_errors(socket: &impl std::os::fd::AsFd) -> usize {
    crate::cmsg::drain_error_queue(socket.as_fd())
}

/// Drains queued ICMP reports; nothing to do where IP_RECVERR is not used.
#[cfg(not(target_os = "linux"))]
pub(crate) fn drain_errors<T>(_socket: &T) -> usize {
    0
}

/// Logs a failed option that only costs performance or a feature, not correctness.
pub(crate) fn log_err(r: io::Result<()>, option: &'static str) {
    if let Err(e) = r {
        tracing::debug!(error = %e, option, "socket option failed");
    }
}

/// Maps an IPv4 destination to IPv4-mapped IPv6 when sending from an IPv6 (dual-stack) socket.
pub(crate) fn map_dst(dst: SocketAddr, v6_socket: bool) -> SocketAddr {
    match dst {
        SocketAddr::V4(a) if v6_socket => SocketAddr::from((a.ip().to_ipv6_mapped(), a.port())),
        other => other,
    }
}

/// Reports IPv4-mapped IPv6 addresses as IPv4, so callers see one address per peer.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}
