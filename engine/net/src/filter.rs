//! Classic BPF on UDP sockets: a socket filter that drops, in the kernel, datagrams that cannot
//! be the protocol's (wrong leading bytes, too short) before they are queued or copied to user
//! space, and the socket's kernel drop count. A forwarder under a junk flood spends its time
//! copying junk out of the socket and loses valid datagrams to a full receive queue; random
//! bytes stopped here cost neither. [`crate::steer`] builds its reuseport program from the same
//! instructions.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

pub(crate) const BPF_LD: u16 = 0x00;
pub(crate) const BPF_JMP: u16 = 0x05;
pub(crate) const BPF_RET: u16 = 0x06;
pub(crate) const BPF_ALU: u16 = 0x04;
pub(crate) const BPF_W: u16 = 0x00;
pub(crate) const BPF_B: u16 = 0x10;
pub(crate) const BPF_ABS: u16 = 0x20;
pub(crate) const BPF_LEN: u16 = 0x80;
pub(crate) const BPF_JEQ: u16 = 0x10;
pub(crate) const BPF_JGE: u16 = 0x30;
pub(crate) const BPF_MOD: u16 = 0x90;
pub(crate) const BPF_K: u16 = 0x00;
pub(crate) const BPF_A: u16 = 0x10;

/// Bytes of the UDP header in front of the payload where a socket filter runs.
const UDP_HEADER: u32 = 8;
/// Longest prefix [`require_payload_prefix`] checks.
pub const MAX_PREFIX: usize = 8;
/// `SK_MEMINFO_DROPS`: index of the drop count in `SO_MEMINFO`'s array.
const SK_MEMINFO_DROPS: usize = 8;
/// Entries of `SO_MEMINFO`'s array (`SK_MEMINFO_VARS`).
const SK_MEMINFO_VARS: usize = 9;

/// One classic BPF instruction.
pub(crate) const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Attaches classic BPF program `prog` to `fd` with socket option `opt` (`SO_ATTACH_FILTER`,
/// `SO_ATTACH_REUSEPORT_CBPF`).
pub(crate) fn attach(
    fd: &impl AsFd,
    opt: libc::c_int,
    prog: &mut [libc::sock_filter],
) -> io::Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, `len` instructions that live until setsockopt returns
    // (the kernel copies and verifies the program); the option length is the size of the
    // `sock_fprog` passed; the fd is a live socket borrowed from the caller.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
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

/// Drops in the kernel every datagram to `socket` whose payload is shorter than `min_len` or
/// does not start with `prefix` (at most [`MAX_PREFIX`] bytes). The kernel counts what it
/// drops in the socket's drop count ([`socket_drops`]). With UDP GRO on, a coalesced batch
/// is judged by its first datagram: the caller still checks every datagram.
pub fn require_payload_prefix(socket: &impl AsFd, prefix: &[u8], min_len: u32) -> io::Result<()> {
    if prefix.len() > MAX_PREFIX || (min_len as usize) < prefix.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefix longer than MAX_PREFIX or than min_len",
        ));
    }
    // ld len; jge min; then per byte: ldb [8 + i]; jeq byte; then accept; drop.
    let drop_at = 2 + 2 * prefix.len() + 1;
    let jf = |at: usize| u8::try_from(drop_at - (at + 1)).unwrap_or(u8::MAX);
    let mut prog = Vec::with_capacity(drop_at + 1);
    prog.push(insn(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0));
    prog.push(insn(
        BPF_JMP | BPF_JGE | BPF_K,
        0,
        jf(1),
        UDP_HEADER + min_len,
    ));
    for (i, &b) in prefix.iter().enumerate() {
        prog.push(insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, UDP_HEADER + i as u32));
        prog.push(insn(
            BPF_JMP | BPF_JEQ | BPF_K,
            0,
            jf(prog.len()),
            u32::from(b),
        ));
    }
    // Accept the whole datagram (a socket filter's result is the length to keep).
    prog.push(insn(BPF_RET | BPF_K, 0, 0, u32::MAX));
    prog.push(insn(BPF_RET | BPF_K, 0, 0, 0));
    attach(socket, libc::SO_ATTACH_FILTER, &mut prog)
}

/// Removes `socket`'s filter, classic or eBPF (`SO_DETACH_FILTER`); a socket without one
/// answers `ENOENT`.
pub fn detach(socket: &impl AsFd) -> io::Result<()> {
    let unused: libc::c_int = 0;
    // SAFETY: SO_DETACH_FILTER reads an int-sized option value it ignores; `unused` lives
    // until setsockopt returns; the fd is a live socket borrowed from the caller.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DETACH_FILTER,
            (&raw const unused).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams the kernel dropped at `socket` since it was created: refused by its filter, or
/// the receive queue full (`SO_MEMINFO`'s drop count).
pub fn socket_drops(socket: &impl AsFd) -> io::Result<u64> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is `len` bytes long,
    // and updates `len`; the fd is a live socket borrowed from the caller.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (SK_MEMINFO_DROPS + 1) * 4 {
        return Err(io::Error::other("SO_MEMINFO too short"));
    }
    Ok(u64::from(info[SK_MEMINFO_DROPS]))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn pair(bind: &str) -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind(bind).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tx = UdpSocket::bind(bind).unwrap();
        (rx, tx)
    }

    /// Sends junk then one good datagram; the good one must be the first thing received.
    fn only_good_arrives(bind: &str) {
        let (rx, tx) = pair(bind);
        require_payload_prefix(&rx, &[0x57, 1], 20).unwrap();
        let to = rx.local_addr().unwrap();
        let mut good = [0xAAu8; 20];
        good[..2].copy_from_slice(&[0x57, 1]);
        let junk: [&[u8]; 5] = [
            b"",
            &[0x57],
            &[0x57, 1, 0, 0], // right prefix, too short
            &[
                0x57, 2, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
                0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
            ], // wrong version
            &[0x00; 1200],
        ];
        for j in junk {
            tx.send_to(j, to).unwrap();
        }
        tx.send_to(&good, to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &good[..]);
        // Loopback delivers in the sender's context: the drops are counted by now.
        assert_eq!(socket_drops(&rx).unwrap(), 5);
    }

    #[test]
    fn the_filter_drops_what_lacks_the_prefix_or_length_ipv4() {
        only_good_arrives("127.0.0.1:0");
    }

    #[test]
    fn the_filter_drops_what_lacks_the_prefix_or_length_ipv6() {
        only_good_arrives("[::1]:0");
    }

    #[test]
    fn a_prefix_longer_than_the_minimum_is_refused() {
        let (rx, _) = pair("127.0.0.1:0");
        assert!(require_payload_prefix(&rx, &[1, 2, 3], 2).is_err());
        assert!(require_payload_prefix(&rx, &[0; MAX_PREFIX + 1], 64).is_err());
    }
}
