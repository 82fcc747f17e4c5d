//! Whether io_uring can run the backend on this machine: the opcodes, provided-buffer rings,
//! UDP GSO/GRO, and an end-to-end multishot receive on loopback. Cached for the process.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::Duration;

use io_uring::{IoUring, opcode};

use super::UringBackend;
use super::bufring::BufRing;
use crate::{Backend, Config, RecvMeta, cmsg};

/// Checks that io_uring can run this backend here: ring setup, RecvMsg/SendMsg opcodes,
/// provided-buffer rings, UDP GSO and GRO. Cached for the process.
pub(crate) fn probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe_uncached).clone()
}

fn probe_uncached() -> Result<(), String> {
    let ring: IoUring = IoUring::builder()
        .setup_cqsize(8)
        .build(4)
        .map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("opcode probe failed: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RecvMsg"),
        (opcode::SendMsg::CODE, "SendMsg"),
        (opcode::AsyncCancel::CODE, "AsyncCancel"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("opcode {name} not supported"));
        }
    }
    let bufs = BufRing::new(&ring, 1, 7, 64)
        .map_err(|e| format!("provided buffer ring unsupported: {e}"))?;
    let _ = ring.submitter().unregister_buf_ring(7);
    drop(bufs);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
    if !cmsg::gso_supported(s.as_fd()) {
        return Err("UDP_SEGMENT (GSO) not supported".into());
    }
    cmsg::set_int(s.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)
        .map_err(|e| format!("UDP_GRO not supported: {e}"))?;
    self_test(&s).map_err(|e| format!("multishot RecvMsg self-test failed: {e}"))
}

/// End to end on loopback: a tiny backend arms its multishot receive (kernel ≥ 6.0, which the
/// opcode probe cannot tell) and must get one datagram sent from `s`.
fn self_test(s: &std::net::UdpSocket) -> io::Result<()> {
    let cfg = Config {
        uring_buffers: 2,
        uring_cq_entries: 4096,
        recv_buffer: 1 << 16,
        send_buffer: 1 << 16,
        ..Config::default()
    };
    let mut b = UringBackend::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &cfg, false)?;
    s.send_to(b"wavry-probe", b.local)?;
    let mut buf = [0u8; 64];
    let mut meta = [RecvMeta::default()];
    let n = b.recv(
        &mut [IoSliceMut::new(&mut buf)],
        &mut meta,
        Some(Duration::from_secs(1)),
    )?;
    if n == 1 && &buf[..meta[0].len] == b"wavry-probe" {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "probe datagram not received",
        ))
    }
}
