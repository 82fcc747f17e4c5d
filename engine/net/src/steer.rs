//! Steering a `SO_REUSEPORT` group by payload bytes instead of the kernel's 4-tuple hash: a
//! classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`) loads a big-endian u32 at a fixed offset
//! of the UDP payload and picks socket `value % n`. The relay uses it so both legs of a relay
//! session (two different peers) land on the shard that owns the session id.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use crate::NetSocket;

const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_MOD: u16 = 0x90;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
const BPF_A: u16 = 0x10;

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
        libc::sock_filter {
            code: BPF_LD | BPF_W | BPF_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        },
        libc::sock_filter {
            code: BPF_ALU | BPF_MOD | BPF_K,
            jt: 0,
            jf: 0,
            k: n,
        },
        libc::sock_filter {
            code: BPF_RET | BPF_A,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, three valid classic BPF instructions that live until
    // setsockopt returns (the kernel copies the program); the option length is the size of
    // the `sock_fprog` passed; the fd is a live socket borrowed from `first`.
    let rc = unsafe {
        libc::setsockopt(
            first.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
