//! Steering a `SO_REUSEPORT` group by payload bytes instead of the kernel's 4-tuple hash: a
//! classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`) loads a big-endian u32 at a fixed offset
//! of the UDP payload and picks socket `value % n`. The relay uses it so both legs of a relay
//! session (two different peers) land on the shard that owns the session id.

use std::io;

use crate::NetSocket;
use crate::filter::{
    BPF_A, BPF_ABS, BPF_ALU, BPF_K, BPF_LD, BPF_MOD, BPF_RET, BPF_W, attach, insn,
};

impl std::os::fd::AsFd for NetSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            NetSocket::Uring(b) => b.as_fd(),
            NetSocket::Portable(b) => b.as_fd(),
        }
    }
}

/// Attaches to the reuseport group of `sockets` (bound in this order by
/// [`crate::bind_sharded`], so index i is `sockets[i]`) a program that sends each datagram to
/// socket `u32_be(payload[offset..offset + 4]) % sockets.len()`. Datagrams shorter than
/// `offset + 4` go to socket 0.
pub fn steer_by_payload_u32(sockets: &[NetSocket], offset: u32) -> io::Result<()> {
    let Some(first) = sockets.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no sockets"));
    };
    let n = u32::try_from(sockets.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets"))?;
    let mut prog = [
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset),
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, n),
        insn(BPF_RET | BPF_A, 0, 0, 0),
    ];
    attach(first, libc::SO_ATTACH_REUSEPORT_CBPF, &mut prog)
}
