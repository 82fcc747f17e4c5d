//! Control messages (cmsg) and the raw socket options that turn them on (Linux).
//!
//! The one place outside the uring backend with `unsafe`: `setsockopt`/`getsockopt` for options
//! `socket2` does not wrap (UDP_GRO, UDP_SEGMENT, IP_PKTINFO, SO_RCVBUFFORCE, ...) and a
//! `recvmsg(MSG_ERRQUEUE)` drain. Encoding and decoding cmsghdrs is plain byte work on buffers we
//! own, so it needs no `unsafe` at all. Public so that benchmarks and probes can reuse it.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::Ecn;

/// `struct cmsghdr` size (and data offset) on this target.
const HDR: usize = size_of::<libc::cmsghdr>();
/// Alignment of cmsg headers and data (`CMSG_ALIGN`).
const ALIGN: usize = size_of::<usize>();

/// Rounds `n` up to the cmsg alignment (`CMSG_ALIGN`).
pub const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Space one control message with `data_len` bytes of data takes (`CMSG_SPACE`).
pub const fn space(data_len: usize) -> usize {
    align(HDR) + align(data_len)
}

/// Room for every control message RIFT sends or receives: GRO/GSO size, packet info, TOS.
pub const CONTROL_LEN: usize = 128;

/// An 8-byte aligned control buffer of [`CONTROL_LEN`] bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct ControlBuf(pub [u8; CONTROL_LEN]);

impl Default for ControlBuf {
    fn default() -> Self {
        Self([0; CONTROL_LEN])
    }
}

/// Appends control messages to a [`ControlBuf`]; `len()` is the `msg_controllen` to pass.
#[derive(Debug)]
pub struct Encoder<'a> {
    buf: &'a mut ControlBuf,
    len: usize,
}

impl<'a> Encoder<'a> {
    /// Starts an empty control message list in `buf`.
    pub fn new(buf: &'a mut ControlBuf) -> Self {
        Self { buf, len: 0 }
    }

    /// Appends one control message; panics if it does not fit (a programming error: the
    /// messages RIFT sends always fit [`CONTROL_LEN`]).
    pub fn push(&mut self, level: i32, ty: i32, data: &[u8]) {
        let sp = space(data.len());
        assert!(self.len + sp <= CONTROL_LEN, "control buffer too small");
        let b = &mut self.buf.0[self.len..self.len + sp];
        b.fill(0);
        let cmsg_len = align(HDR) + data.len();
        b[..size_of::<usize>()].copy_from_slice(&cmsg_len.to_ne_bytes());
        b[size_of::<usize>()..size_of::<usize>() + 4].copy_from_slice(&level.to_ne_bytes());
        b[size_of::<usize>() + 4..size_of::<usize>() + 8].copy_from_slice(&ty.to_ne_bytes());
        b[align(HDR)..align(HDR) + data.len()].copy_from_slice(data);
        self.len += sp;
    }

    /// Bytes used so far (`msg_controllen`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no message was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Appends the UDP_SEGMENT (GSO) size message.
pub fn push_gso(enc: &mut Encoder<'_>, segment_size: u16) {
    enc.push(
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        &segment_size.to_ne_bytes(),
    );
}

/// Appends the TOS (IPv4) or traffic-class (IPv6) message carrying `tos`.
pub fn push_tos(enc: &mut Encoder<'_>, v6: bool, tos: u8) {
    let v = i32::from(tos).to_ne_bytes();
    if v6 {
        enc.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &v);
    } else {
        enc.push(libc::IPPROTO_IP, libc::IP_TOS, &v);
    }
}

/// Iterates `(level, type, data)` over a received control buffer; stops at anything malformed.
pub fn iter(control: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let rest = control.get(off..)?;
        if rest.len() < HDR {
            return None;
        }
        let cmsg_len = usize::from_ne_bytes(rest[..size_of::<usize>()].try_into().ok()?);
        let level = i32::from_ne_bytes(
            rest[size_of::<usize>()..size_of::<usize>() + 4]
                .try_into()
                .ok()?,
        );
        let ty = i32::from_ne_bytes(
            rest[size_of::<usize>() + 4..size_of::<usize>() + 8]
                .try_into()
                .ok()?,
        );
        if cmsg_len < HDR || cmsg_len > rest.len() {
            return None;
        }
        let data = &rest[align(HDR)..cmsg_len];
        off += align(cmsg_len);
        Some((level, ty, data))
    })
}

/// What the receive-side control messages said about one datagram (batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvInfo {
    /// UDP_GRO segment size, when the kernel coalesced.
    pub gro_size: Option<usize>,
    /// Destination address from IP_PKTINFO / IPV6_PKTINFO.
    pub dst_ip: Option<IpAddr>,
    /// ECN bits from IP_TOS / IPV6_TCLASS.
    pub ecn: Option<Ecn>,
    /// The whole TOS / traffic-class byte (DSCP and ECN) from IP_TOS / IPV6_TCLASS.
    pub tos: Option<u8>,
}

/// Decodes the control messages RIFT asks for (GRO size, packet info, TOS).
pub fn decode(control: &[u8]) -> RecvInfo {
    let mut info = RecvInfo::default();
    for (level, ty, data) in iter(control) {
        match (level, ty) {
            (libc::SOL_UDP, libc::UDP_GRO) => {
                if let Some(v) = read_i32(data) {
                    info.gro_size = usize::try_from(v).ok().filter(|&s| s > 0);
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
                if let Some(a) = data.get(8..12) {
                    let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                    info.dst_ip = Some(IpAddr::V4(ip));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
                if let Some(a) = data.get(..16).and_then(|a| <[u8; 16]>::try_from(a).ok()) {
                    info.dst_ip = Some(Ipv6Addr::from(a).to_canonical());
                }
            }
            (libc::IPPROTO_IP, libc::IP_TOS) => {
                if let Some(&b) = data.first() {
                    info.ecn = Ecn::from_tos(b);
                    info.tos = Some(b);
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                if let Some(v) = read_i32(data) {
                    info.ecn = Ecn::from_tos(v as u8);
                    info.tos = Some(v as u8);
                }
            }
            _ => {}
        }
    }
    info
}

fn read_i32(data: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// Decodes a `sockaddr_in` / `sockaddr_in6` from raw bytes; IPv4-mapped IPv6 becomes IPv4.
pub fn decode_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let a = name.get(4..8)?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                port,
            )))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(name.get(8..24)?).ok()?);
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)),
            })
        }
        _ => None,
    }
}

/// Sets an integer socket option.
pub fn set_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor (borrowed); the option value points at a local c_int
    // whose size is passed alongside; the kernel only reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an integer socket option.
pub fn get_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is live; `value`/`len` are valid for writes of the sizes given and outlive
    // the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Does this kernel accept UDP_SEGMENT (GSO) on this socket?
pub fn gso_supported(fd: BorrowedFd<'_>) -> bool {
    get_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
}

/// One `sendmsg` of `contents` to `dst`, cut into `segment`-byte datagrams by the kernel when
/// `segment` is set (UDP_SEGMENT), with the TOS (IPv4) / traffic-class (IPv6 when `v6_tos`) byte
/// `tos` as a control message. Honours the socket's blocking mode.
pub fn send_msg(
    fd: BorrowedFd<'_>,
    dst: &socket2::SockAddr,
    contents: &[u8],
    segment: Option<u16>,
    v6_tos: bool,
    tos: u8,
) -> io::Result<usize> {
    let mut ctrl = ControlBuf::default();
    let mut enc = Encoder::new(&mut ctrl);
    if let Some(s) = segment {
        push_gso(&mut enc, s);
    }
    push_tos(&mut enc, v6_tos, tos);
    let ctrl_len = enc.len();
    let mut iov = libc::iovec {
        iov_base: contents.as_ptr().cast_mut().cast(),
        iov_len: contents.len(),
    };
    // SAFETY: an all-zero msghdr is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = dst.as_ptr().cast_mut().cast();
    hdr.msg_namelen = dst.len();
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = ctrl.0.as_mut_ptr().cast();
    hdr.msg_controllen = ctrl_len as _;
    // SAFETY: every pointer in `hdr` refers to `dst`, `iov` (describing `contents`) or `ctrl`,
    // all alive for the call; the kernel only reads them.
    let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &raw const hdr, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Drains the socket error queue (IP_RECVERR / IPV6_RECVERR); returns how many ICMP reports
/// were discarded. Non-blocking.
pub fn drain_error_queue(fd: BorrowedFd<'_>) -> usize {
    let mut n = 0;
    let mut data = [0u8; 64];
    let mut control = ControlBuf::default();
    loop {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control" header.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &raw mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = CONTROL_LEN as _;
        // SAFETY: every pointer in `hdr` refers to a local buffer that outlives the call, with
        // its true length; MSG_DONTWAIT keeps the call from blocking.
        let rc = unsafe {
            libc::recvmsg(
                fd.as_raw_fd(),
                &raw mut hdr,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            return n;
        }
        n += 1;
        if n > 4096 {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_roundtrips() {
        let mut buf = ControlBuf::default();
        let mut enc = Encoder::new(&mut buf);
        enc.push(
            libc::SOL_UDP,
            libc::UDP_GRO,
            &1200i32.to_ne_bytes(), // decoded as GRO size
        );
        push_tos(&mut enc, true, 0xB8 | 0b10);
        let len = enc.len();
        assert_eq!(len, space(4) * 2);
        let info = decode(&buf.0[..len]);
        assert_eq!(info.gro_size, Some(1200));
        assert_eq!(info.ecn, Some(Ecn::Ect0));
    }

    #[test]
    fn malformed_control_stops_iteration() {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&999usize.to_ne_bytes());
        assert_eq!(iter(&bytes).count(), 0);
    }

    #[test]
    fn mapped_v6_source_reads_as_v4() {
        let mut bytes = [0u8; 28];
        bytes[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        bytes[2..4].copy_from_slice(&4000u16.to_be_bytes());
        bytes[8..24].copy_from_slice(&Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
        let bytes: &[u8] = &bytes;
        assert_eq!(
            decode_sockaddr(bytes),
            Some(SocketAddr::from(([127, 0, 0, 1], 4000)))
        );
    }

    /// Receives one datagram on a plain socket with IP_RECVTOS / IPV6_RECVTCLASS on and
    /// returns the TOS byte it carried.
    fn received_tos(r: &std::net::UdpSocket) -> u8 {
        use std::os::fd::AsFd;
        let v6 = r.local_addr().expect("addr").is_ipv6();
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS)
        } else {
            (libc::IPPROTO_IP, libc::IP_RECVTOS)
        };
        set_int(r.as_fd(), level, name, 1).expect("recv tos");
        r.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .expect("timeout");
        let mut data = [0u8; 2048];
        let mut control = ControlBuf::default();
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero msghdr is valid.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &raw mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = CONTROL_LEN as _;
        // SAFETY: `hdr` points at live local buffers of the lengths given.
        let rc = unsafe { libc::recvmsg(r.as_raw_fd(), &raw mut hdr, 0) };
        assert!(rc >= 0, "recvmsg: {}", io::Error::last_os_error());
        let used = (hdr.msg_controllen as usize).min(CONTROL_LEN);
        decode(&control.0[..used]).tos.expect("TOS cmsg")
    }

    /// Both backends mark datagrams DSCP EF (0xB8) on IPv4 and IPv6 and keep it when a
    /// transmit sets ECN bits.
    #[test]
    fn datagrams_carry_dscp_ef() {
        use crate::{Backend, Config, IoMode, Transmit};
        for (local, mode) in [
            ("127.0.0.1:0", IoMode::Uring),
            ("127.0.0.1:0", IoMode::Portable),
            ("[::1]:0", IoMode::Uring),
            ("[::1]:0", IoMode::Portable),
        ] {
            let r = std::net::UdpSocket::bind(local).expect("bind");
            let addr = local.parse().expect("addr");
            let mut s = crate::bind(addr, mode, &Config::default()).expect("backend");
            let dst = r.local_addr().expect("addr");
            let plain = Transmit {
                dst,
                segment_size: None,
                ecn: None,
                contents: b"ef",
            };
            s.send(&[plain]).expect("send");
            assert_eq!(received_tos(&r), crate::TOS_DSCP_EF, "{mode} {local}");
            s.send(&[Transmit {
                ecn: Some(Ecn::Ect0),
                ..plain
            }])
            .expect("send");
            assert_eq!(
                received_tos(&r),
                crate::TOS_DSCP_EF | 0b10,
                "{mode} {local}"
            );
        }
    }
}
