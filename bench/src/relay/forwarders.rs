//! The two in-process forwarders the relay is measured against in the same run:
//!
//! - **naive**: what the original relay did — one tokio task, `recv_from` / `send_to`, the same
//!   20-byte relay header decoded and a `HashMap` lookup by session id; peers are learned from
//!   the first two source addresses of a session (no leases, no crypto, no budgets).
//! - **ceiling**: the raw forward loop — blocking `recvmsg` with UDP_GRO and `sendmsg` with
//!   UDP_SEGMENT to one fixed destination, no parsing and no lookup.
//!
//! Each runs on its own named thread, so its CPU time is read from /proc by thread name.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use socket2::SockAddr;
use wavry_rift::wire::{RelayHeader, RelayType};

use crate::net::raw;

/// Thread name of the naive forwarder.
pub(crate) const NAIVE_THREAD: &str = "rb-naive";
/// Thread name of the ceiling forwarder.
pub(crate) const CEILING_THREAD: &str = "rb-ceiling";
/// How often a forwarder checks its stop flag when idle.
const POLL: Duration = Duration::from_millis(50);

/// A forwarder thread; stopped and joined on drop.
pub(crate) struct Forwarder {
    /// Where to send datagrams for it to forward.
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Socket buffers as large as the machine allows (the FORCE options need root).
pub(crate) fn big_buffers(sock: &UdpSocket) {
    let v = 32 << 20;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if wavry_net::cmsg::set_int(sock.as_fd(), libc::SOL_SOCKET, force, v).is_err() {
            let _ = wavry_net::cmsg::set_int(sock.as_fd(), libc::SOL_SOCKET, plain, v);
        }
    }
}

/// Starts the naive forwarder.
pub(crate) fn naive() -> anyhow::Result<Forwarder> {
    naive_on(UdpSocket::bind("127.0.0.1:0")?, None)
}

/// Starts the naive forwarder on `sock`, its thread pinned to `cpus` when given.
pub(crate) fn naive_on(
    sock: UdpSocket,
    cpus: Option<&'static [usize]>,
) -> anyhow::Result<Forwarder> {
    big_buffers(&sock);
    sock.set_nonblocking(true)?;
    let addr = sock.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name(NAIVE_THREAD.into())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            if let Some(cpus) = cpus {
                if let Err(e) = wavry_netns::pin(0, cpus) {
                    eprintln!("naive forwarder: cannot pin to {cpus:?}: {e}");
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = cpus;
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("naive forwarder: no runtime: {e}");
                    return;
                }
            };
            rt.block_on(naive_task(sock, flag));
        })
        .context("spawning the naive forwarder")?;
    Ok(Forwarder {
        addr,
        stop,
        handle: Some(handle),
    })
}

async fn naive_task(sock: UdpSocket, stop: Arc<AtomicBool>) {
    let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else {
        return;
    };
    let mut peers: HashMap<[u8; 16], [Option<SocketAddr>; 2]> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok((n, src))) = tokio::time::timeout(POLL, sock.recv_from(&mut buf)).await else {
            continue;
        };
        let Ok(h) = RelayHeader::decode(&buf[..n]) else {
            continue;
        };
        if h.kind != RelayType::Forward {
            continue;
        }
        let slots = peers.entry(h.session_id).or_insert([None, None]);
        let dst = match *slots {
            [Some(a), Some(b)] if a == src => b,
            [Some(a), Some(b)] if b == src => a,
            [Some(a), None] if a != src => {
                slots[1] = Some(src);
                a
            }
            [None, _] => {
                slots[0] = Some(src);
                continue;
            }
            _ => continue,
        };
        let _ = sock.send_to(&buf[..n], dst).await;
    }
}

/// Starts the ceiling forwarder, which sends everything it receives to `dst`.
pub(crate) fn ceiling(dst: SocketAddr) -> anyhow::Result<Forwarder> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    big_buffers(&sock);
    wavry_net::cmsg::set_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)?;
    sock.set_read_timeout(Some(POLL))?;
    let addr = sock.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name(CEILING_THREAD.into())
        .spawn(move || {
            let to = SockAddr::from(dst);
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                let Ok((len, stride)) = raw::recv_gro_stride(&sock, &mut buf) else {
                    continue;
                };
                let seg = u16::try_from(stride).unwrap_or(u16::MAX);
                let _ = if len > stride {
                    raw::send_gso(&sock, &to, &buf[..len], seg)
                } else {
                    sock.send_to(&buf[..len], dst).map(|_| ())
                };
            }
        })
        .context("spawning the ceiling forwarder")?;
    Ok(Forwarder {
        addr,
        stop,
        handle: Some(handle),
    })
}
