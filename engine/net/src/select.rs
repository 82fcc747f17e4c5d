//! Choosing a backend at run time: `--io auto|uring|portable`, `WAVRY_IO`, the io_uring probe
//! and the one-line downgrade.

use std::net::SocketAddr;

use crate::{Backend, Config, IoMode, NetError, NetSocket, PortableBackend};

/// Environment variable that makes the io_uring probe fail ("1", "true", "yes" or "on"), so
/// `auto` takes the portable path; for tests and for kernels where io_uring misbehaves.
pub const DISABLE_URING_ENV: &str = "WAVRY_IO_DISABLE_URING";

/// Checks whether the io_uring backend can run here; `Err` carries the human-readable reason.
///
/// Fails without probing when [`Config::disable_uring`] is set or [`DISABLE_URING_ENV`] is on;
/// otherwise sets up a ring, probes RecvMsg/SendMsg, registers a provided-buffer ring and checks
/// UDP_SEGMENT / UDP_GRO on a loopback socket (cached for the process).
pub fn probe_uring(cfg: &Config) -> Result<(), NetError> {
    let unavailable = |reason: String| NetError::UringUnavailable { reason };
    if cfg.disable_uring {
        return Err(unavailable("disabled by Config::disable_uring".into()));
    }
    if let Ok(v) = std::env::var(DISABLE_URING_ENV) {
        if matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ) {
            return Err(unavailable(format!(
                "probe failed: disabled by {DISABLE_URING_ENV}"
            )));
        }
    }
    probe_platform().map_err(unavailable)
}

#[cfg(target_os = "linux")]
fn probe_platform() -> Result<(), String> {
    crate::uring::probe()
}

#[cfg(not(target_os = "linux"))]
fn probe_platform() -> Result<(), String> {
    Err("io_uring is Linux-only".into())
}

/// What [`resolve`] decided: io_uring, or portable (with the reason when `auto` downgraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Uring,
    Portable,
}

/// Turns a mode into a concrete choice, probing for `auto` and `uring`. Logs the downgrade once.
fn resolve(mode: IoMode, cfg: &Config) -> Result<Choice, NetError> {
    match mode {
        IoMode::Portable => Ok(Choice::Portable),
        IoMode::Uring => probe_uring(cfg).map(|()| Choice::Uring),
        IoMode::Auto => match probe_uring(cfg) {
            Ok(()) => Ok(Choice::Uring),
            Err(e) => {
                tracing::warn!(reason = %e, "io=auto: using the portable backend");
                Ok(Choice::Portable)
            }
        },
    }
}

/// Binds one socket at `addr` with the backend `mode` asks for.
///
/// `auto` tries io_uring and falls back to portable with one `warn` line giving the reason;
/// `uring` fails with [`NetError::UringUnavailable`] instead of downgrading.
pub fn bind(addr: SocketAddr, mode: IoMode, cfg: &Config) -> Result<NetSocket, NetError> {
    let choice = resolve(mode, cfg)?;
    open(addr, choice, mode, cfg, false)
}

/// Binds `n` sockets on the same address with SO_REUSEPORT, one per core, each with its own
/// backend (and ring). With port 0 the first socket picks the port and the others join it.
/// The kernel spreads flows over the shards by 4-tuple hash.
pub fn bind_sharded(
    addr: SocketAddr,
    n: usize,
    mode: IoMode,
    cfg: &Config,
) -> Result<Vec<NetSocket>, NetError> {
    if n == 0 {
        return Err(NetError::Io {
            context: "bind_sharded",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "zero shards"),
        });
    }
    let choice = resolve(mode, cfg)?;
    let first = open(addr, choice, mode, cfg, true)?;
    let addr = first.local_addr().map_err(NetError::io("local_addr"))?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    for _ in 1..n {
        all.push(open(addr, choice, mode, cfg, true)?);
    }
    Ok(all)
}

fn open(
    addr: SocketAddr,
    choice: Choice,
    mode: IoMode,
    cfg: &Config,
    reuse_port: bool,
) -> Result<NetSocket, NetError> {
    let portable = || {
        PortableBackend::bind(addr, cfg, reuse_port)
            .map(NetSocket::Portable)
            .map_err(NetError::io("bind portable socket"))
    };
    match choice {
        Choice::Portable => portable(),
        Choice::Uring => open_uring(addr, mode, cfg, reuse_port, portable),
    }
}

#[cfg(target_os = "linux")]
fn open_uring(
    addr: SocketAddr,
    mode: IoMode,
    cfg: &Config,
    reuse_port: bool,
    portable: impl FnOnce() -> Result<NetSocket, NetError>,
) -> Result<NetSocket, NetError> {
    let socket =
        crate::socket::open(addr, cfg, reuse_port).map_err(NetError::io("bind io_uring socket"))?;
    match crate::UringBackend::from_socket(socket, cfg) {
        Ok(b) => Ok(NetSocket::Uring(Box::new(b))),
        Err(e) if mode == IoMode::Auto => {
            tracing::warn!(reason = %e, "io=auto: io_uring ring setup failed, using the portable backend");
            portable()
        }
        Err(e) => Err(NetError::UringUnavailable {
            reason: format!("ring setup failed: {e}"),
        }),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_uring(
    _addr: SocketAddr,
    _mode: IoMode,
    _cfg: &Config,
    _reuse_port: bool,
    portable: impl FnOnce() -> Result<NetSocket, NetError>,
) -> Result<NetSocket, NetError> {
    portable()
}
