//! Ethernet II / IPv4 / IPv6 / UDP frames, parsed and readdressed in place.
//!
//! An AF_XDP forwarder receives whole Ethernet frames into UMEM, hands the UDP payload to the
//! sans-IO relay core and, for a forward, rewrites the same buffer (MACs, IP addresses, UDP
//! ports, TTL, checksums) and transmits it. This module is that parsing and rewriting: safe,
//! allocation-free and panic-free on any input, so it also runs under the fuzzer.
//!
//! - [`parse`] accepts exactly one shape: Ethernet II, at most one 802.1Q / 802.1ad tag, IPv4
//!   (options allowed, no fragments, header checksum verified) or IPv6 without extension
//!   headers, then UDP whose length agrees with the IP length. Anything else is an error and
//!   goes to the kernel's socket path. The UDP checksum is not verified: the payload is
//!   authenticated end to end, and reading it would cost a pass over every byte.
//! - [`rewrite`] readdresses a parsed frame and updates the UDP checksum incrementally
//!   (RFC 1624) from the old and new addresses and ports, so the payload is never re-read.
//! - [`build`] writes a complete frame around a payload (replies, tests, fuzz seeds).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::ops::Range;

/// Length of an Ethernet II header without a VLAN tag.
pub const ETH_HLEN: usize = 14;
/// TTL / hop limit of every frame [`rewrite`] and [`build`] write: the relay originates the
/// datagrams it forwards (it is an endpoint, not a router), so the count starts afresh.
pub const TTL: u8 = 64;

const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
/// IPv4 flags and fragment offset: More Fragments and the 13-bit offset (DF is allowed).
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;
const IPV4_DF: u16 = 0x4000;
/// IPv6 extension header numbers (IANA "IPv6 Extension Header Types"): hop-by-hop, routing,
/// fragment, ESP, AH, destination options, mobility, HIP, shim6 and the two experimental ones.
const IPV6_EXTENSION_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

/// A parsed Ethernet II frame carrying one UDP datagram over IPv4 or IPv6.
///
/// Offsets index the frame it was parsed from; [`rewrite`] needs that same frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    /// Ethernet destination MAC.
    pub dst_mac: [u8; 6],
    /// Ethernet source MAC.
    pub src_mac: [u8; 6],
    /// IP source address and UDP source port.
    pub src: SocketAddr,
    /// IP destination address and UDP destination port.
    pub dst: SocketAddr,
    /// Byte offset of the IP header (14, or 18 with one 802.1Q / 802.1ad tag).
    pub l3: usize,
    /// Byte offset of the UDP header.
    pub l4: usize,
    /// Byte range of the UDP payload within the frame (excludes Ethernet padding).
    pub payload: Range<usize>,
}

impl UdpFrame {
    /// Whether the datagram travels over IPv6 (else IPv4).
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Why a frame is not one [`parse`] accepts, or why [`rewrite`] / [`build`] refused.
///
/// Every parse error means "not for the fast path": the forwarder passes such frames to the
/// kernel (`XDP_PASS`) rather than dropping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame ends before a header does, or before the length its IP header declares.
    #[error("frame truncated")]
    Truncated,
    /// The EtherType (after at most one VLAN tag) is neither IPv4 nor IPv6.
    #[error("not an IPv4 or IPv6 frame (EtherType, or more than one VLAN tag)")]
    NotIp,
    /// The IP protocol / next header is not UDP.
    #[error("not UDP")]
    NotUdp,
    /// An IPv4 fragment (More Fragments set or a non-zero offset); the kernel reassembles.
    #[error("IPv4 fragment")]
    Fragment,
    /// IPv6 with extension headers before UDP (not parsed here).
    #[error("IPv6 extension headers")]
    Ipv6ExtensionHeaders,
    /// IP version disagrees with the EtherType, or the IPv4 IHL is below 5.
    #[error("bad IP header (version or IHL)")]
    BadIpHeader,
    /// IP total / payload length and UDP length are inconsistent, or a datagram too long to
    /// build.
    #[error("inconsistent IP / UDP lengths")]
    BadLength,
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadChecksum,
    /// The new addresses are not both of the frame's IP family (or, for [`build`], not of one
    /// family); the caller sends through the kernel's socket instead.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// The [`UdpFrame`] handed to [`rewrite`] does not describe this frame.
    #[error("frame does not match its parse")]
    ParseMismatch,
    /// The buffer handed to [`build`] is too small for the frame.
    #[error("buffer too small for the frame")]
    TooShort,
}

/// Parses an Ethernet II frame carrying one unfragmented UDP datagram over IPv4 or IPv6.
///
/// Accepts at most one 802.1Q / 802.1ad tag, IPv4 options, and Ethernet padding after the IP
/// datagram (excluded from `payload`). Verifies the IPv4 header checksum, not the UDP checksum.
pub fn parse(frame: &[u8]) -> Result<UdpFrame, FrameError> {
    let dst_mac: [u8; 6] = read(frame, 0)?;
    let src_mac: [u8; 6] = read(frame, 6)?;
    let mut ethertype = read16(frame, 12)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        ethertype = read16(frame, ETH_HLEN + 2)?;
        l3 += VLAN_HLEN;
    }
    let ip = frame.get(l3..).ok_or(FrameError::Truncated)?;
    let (src_ip, dst_ip, ip_hlen, ip_payload_len) = match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(ip)?,
        ETHERTYPE_IPV6 => parse_ipv6(ip)?,
        _ => return Err(FrameError::NotIp),
    };
    let l4 = l3 + ip_hlen;
    let udp: [u8; UDP_HLEN] = read(frame, l4)?;
    let [s0, s1, d0, d1, n0, n1, _, _] = udp;
    if usize::from(u16::from_be_bytes([n0, n1])) != ip_payload_len {
        return Err(FrameError::BadLength);
    }
    let payload = l4 + UDP_HLEN..l4 + ip_payload_len;
    if payload.end > frame.len() {
        // The IP parsers checked this already; kept so no later slicing can fail.
        return Err(FrameError::Truncated);
    }
    Ok(UdpFrame {
        dst_mac,
        src_mac,
        src: socket_addr(src_ip, u16::from_be_bytes([s0, s1])),
        dst: socket_addr(dst_ip, u16::from_be_bytes([d0, d1])),
        l3,
        l4,
        payload,
    })
}

/// Parses an IPv4 header at the start of `ip`: (source, destination, header length, UDP length).
fn parse_ipv4(ip: &[u8]) -> Result<(IpAddr, IpAddr, usize, usize), FrameError> {
    let fixed: &[u8; IPV4_HLEN] = ip.first_chunk().ok_or(FrameError::Truncated)?;
    if fixed[0] >> 4 != 4 {
        return Err(FrameError::BadIpHeader);
    }
    let hlen = usize::from(fixed[0] & 0x0f) * 4;
    if hlen < IPV4_HLEN {
        return Err(FrameError::BadIpHeader);
    }
    let header = ip.get(..hlen).ok_or(FrameError::Truncated)?;
    if fold(sum(header)) != 0xffff {
        return Err(FrameError::BadChecksum);
    }
    if u16::from_be_bytes([fixed[6], fixed[7]]) & IPV4_MF_OR_OFFSET != 0 {
        return Err(FrameError::Fragment);
    }
    if fixed[9] != IPPROTO_UDP {
        return Err(FrameError::NotUdp);
    }
    let total = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if total < hlen + UDP_HLEN {
        return Err(FrameError::BadLength);
    }
    if total > ip.len() {
        return Err(FrameError::Truncated);
    }
    let src = Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]);
    let dst = Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]);
    Ok((src.into(), dst.into(), hlen, total - hlen))
}

/// Parses an IPv6 header at the start of `ip`: (source, destination, header length, UDP length).
fn parse_ipv6(ip: &[u8]) -> Result<(IpAddr, IpAddr, usize, usize), FrameError> {
    let fixed: &[u8; IPV6_HLEN] = ip.first_chunk().ok_or(FrameError::Truncated)?;
    if fixed[0] >> 4 != 6 {
        return Err(FrameError::BadIpHeader);
    }
    let next_header = fixed[6];
    if next_header != IPPROTO_UDP {
        return Err(if IPV6_EXTENSION_HEADERS.contains(&next_header) {
            FrameError::Ipv6ExtensionHeaders
        } else {
            FrameError::NotUdp
        });
    }
    // Zero (a jumbogram) is below 8 as well: jumbograms need a hop-by-hop header anyway.
    let payload_len = usize::from(u16::from_be_bytes([fixed[4], fixed[5]]));
    if payload_len < UDP_HLEN {
        return Err(FrameError::BadLength);
    }
    if IPV6_HLEN + payload_len > ip.len() {
        return Err(FrameError::Truncated);
    }
    let src: [u8; 16] = read(fixed, 8)?;
    let dst: [u8; 16] = read(fixed, 24)?;
    Ok((
        Ipv6Addr::from(src).into(),
        Ipv6Addr::from(dst).into(),
        IPV6_HLEN,
        payload_len,
    ))
}

/// Readdresses a parsed frame for forwarding, in place, ready to transmit from the same buffer.
///
/// Writes the Ethernet source and destination MACs, IP source and destination, UDP ports and
/// TTL / hop limit ([`TTL`]); recomputes the IPv4 header checksum (20–60 bytes) and updates the
/// UDP checksum incrementally (RFC 1624) without reading the payload. An IPv4 UDP checksum of 0
/// ("none") stays 0; an IPv6 one of 0 (illegal) is computed in full. A VLAN tag, DSCP / ECN and
/// the IPv4 identification are left as they were.
///
/// `parsed` must come from [`parse`] of this same `frame` (else [`FrameError::ParseMismatch`],
/// with the frame untouched). `src` and `dst` must both be of the frame's family, else
/// [`FrameError::FamilyMismatch`]: the caller then uses the kernel's socket path.
pub fn rewrite(
    frame: &mut [u8],
    parsed: &UdpFrame,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<(), FrameError> {
    let v6 = parsed.is_ipv6();
    if parsed.dst.is_ipv6() != v6 || src.is_ipv6() != v6 || dst.is_ipv6() != v6 {
        return Err(FrameError::FamilyMismatch);
    }
    let (pair, pair_len) = addr_pair(src.ip(), dst.ip()).ok_or(FrameError::FamilyMismatch)?;
    let new_addrs = pair.get(..pair_len).ok_or(FrameError::FamilyMismatch)?;
    let (version, ttl_at, addrs_at) = if v6 { (6, 7, 8) } else { (4, 8, 12) };

    // Carve the frame into disjoint headers; every check happens before the first write.
    let mismatch = FrameError::ParseMismatch;
    let frame = frame.get_mut(..parsed.payload.end).ok_or(mismatch)?;
    let (head, payload) = frame
        .split_at_mut_checked(parsed.payload.start)
        .ok_or(mismatch)?;
    let (head, udp) = head.split_at_mut_checked(parsed.l4).ok_or(mismatch)?;
    let udp: &mut [u8; UDP_HLEN] = udp.try_into().map_err(|_| mismatch)?;
    let (eth, ip) = head.split_at_mut_checked(parsed.l3).ok_or(mismatch)?;
    let macs: &mut [u8; 12] = eth.first_chunk_mut().ok_or(mismatch)?;
    let ip_len_ok = if v6 {
        ip.len() == IPV6_HLEN
    } else {
        ip.first().map(|b| usize::from(b & 0x0f) * 4) == Some(ip.len())
    };
    if !ip_len_ok || ip.first().map(|b| b >> 4) != Some(version) {
        return Err(mismatch);
    }
    // Both IP headers hold source then destination back to back: 12..20 (v4), 8..40 (v6).
    let (ip_front, ip_addrs) = ip.split_at_mut_checked(addrs_at).ok_or(mismatch)?;
    let addrs = ip_addrs.get_mut(..pair_len).ok_or(mismatch)?;
    let ttl = ip_front.get_mut(ttl_at).ok_or(mismatch)?;

    macs[..6].copy_from_slice(&dst_mac);
    macs[6..].copy_from_slice(&src_mac);
    *ttl = TTL;
    let old_sum = sum(addrs) + sum(&udp[..4]);
    addrs.copy_from_slice(new_addrs);
    udp[..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    let new_sum = sum(new_addrs) + sum(&udp[..4]);

    if !v6 {
        ip[10] = 0;
        ip[11] = 0;
        let check = !fold(sum(ip));
        ip[10..12].copy_from_slice(&check.to_be_bytes());
    }

    let old_check = u16::from_be_bytes([udp[6], udp[7]]);
    let check = match (old_check, v6) {
        // IPv4 "no checksum" stays so.
        (0, false) => 0,
        // Illegal on IPv6: compute it in full (the one case that reads the payload).
        (0, true) => udp_checksum(new_addrs, *udp, payload),
        // RFC 1624 eq. 3: HC' = ~(~HC + ~m + m'), summed over every changed word.
        _ => {
            let acc = u64::from(!old_check) + u64::from(!fold(old_sum)) + u64::from(fold(new_sum));
            nonzero(!fold(acc))
        }
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    Ok(())
}

/// Writes a complete Ethernet II / IP / UDP frame around `payload` into `buf` and returns its
/// length; replies from the fast path, tests and fuzz seeds use it.
///
/// IPv4: DF set, TTL [`TTL`], ID 0, no options. IPv6: hop limit [`TTL`], traffic class and flow
/// label 0. Both checksums are valid. No VLAN tag. `src` and `dst` must be of one family
/// ([`FrameError::FamilyMismatch`]); a payload too long for the IP length field is
/// [`FrameError::BadLength`], a buffer too small [`FrameError::TooShort`].
pub fn build(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<usize, FrameError> {
    let (pair, pair_len) = addr_pair(src.ip(), dst.ip()).ok_or(FrameError::FamilyMismatch)?;
    let addrs = pair.get(..pair_len).ok_or(FrameError::FamilyMismatch)?;
    let v6 = src.is_ipv6();
    let ip_hlen = if v6 { IPV6_HLEN } else { IPV4_HLEN };
    let udp_len = UDP_HLEN + payload.len();
    // IPv4 counts its own header in the total length; IPv6 counts only the payload.
    let ip_len_field = u16::try_from(if v6 { udp_len } else { ip_hlen + udp_len })
        .map_err(|_| FrameError::BadLength)?;
    let udp_len_field = u16::try_from(udp_len).map_err(|_| FrameError::BadLength)?;
    let len = ETH_HLEN + ip_hlen + udp_len;

    let out = buf.get_mut(..len).ok_or(FrameError::TooShort)?;
    let (eth, rest) = out
        .split_first_chunk_mut::<ETH_HLEN>()
        .ok_or(FrameError::TooShort)?;
    let (ip, rest) = rest
        .split_at_mut_checked(ip_hlen)
        .ok_or(FrameError::TooShort)?;
    let (udp, body) = rest
        .split_first_chunk_mut::<UDP_HLEN>()
        .ok_or(FrameError::TooShort)?;
    if body.len() != payload.len() {
        return Err(FrameError::TooShort);
    }
    body.copy_from_slice(payload);

    let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    eth[..6].copy_from_slice(&dst_mac);
    eth[6..12].copy_from_slice(&src_mac);
    eth[12..].copy_from_slice(&ethertype.to_be_bytes());

    let (fixed, ip_addrs) = ip
        .split_at_mut_checked(ip_hlen - pair_len)
        .ok_or(FrameError::TooShort)?;
    ip_addrs.copy_from_slice(addrs);
    let [len_hi, len_lo] = ip_len_field.to_be_bytes();
    if v6 {
        // version 6, traffic class 0, flow label 0, payload length, next header, hop limit.
        fixed.copy_from_slice(&[0x60, 0, 0, 0, len_hi, len_lo, IPPROTO_UDP, TTL]);
    } else {
        let [df_hi, df_lo] = IPV4_DF.to_be_bytes();
        // version 4 / IHL 5, TOS 0, total length, ID 0, DF, TTL, UDP, checksum (below).
        fixed.copy_from_slice(&[
            0x45,
            0,
            len_hi,
            len_lo,
            0,
            0,
            df_hi,
            df_lo,
            TTL,
            IPPROTO_UDP,
            0,
            0,
        ]);
        let check = !fold(sum(ip));
        ip[10..12].copy_from_slice(&check.to_be_bytes());
    }

    udp[..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len_field.to_be_bytes());
    udp[6..].copy_from_slice(&[0, 0]);
    let check = udp_checksum(addrs, *udp, body);
    udp[6..].copy_from_slice(&check.to_be_bytes());
    Ok(len)
}

/// Source and destination addresses back to back as both IP headers hold them, and how many
/// bytes of the array that is (8 or 32); `None` when the families differ.
fn addr_pair(src: IpAddr, dst: IpAddr) -> Option<([u8; 32], usize)> {
    let mut pair = [0u8; 32];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pair[..4].copy_from_slice(&s.octets());
            pair[4..8].copy_from_slice(&d.octets());
            Some((pair, 8))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pair[..16].copy_from_slice(&s.octets());
            pair[16..].copy_from_slice(&d.octets());
            Some((pair, 32))
        }
        _ => None,
    }
}

fn socket_addr(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(ip) => SocketAddr::new(ip.into(), port),
        // Flow info and scope are not on the wire here; a parsed address carries neither.
        IpAddr::V6(ip) => SocketAddrV6::new(ip, port, 0, 0).into(),
    }
}

fn read<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], FrameError> {
    buf.get(at..)
        .and_then(<[u8]>::first_chunk)
        .copied()
        .ok_or(FrameError::Truncated)
}

fn read16(buf: &[u8], at: usize) -> Result<u16, FrameError> {
    read(buf, at).map(u16::from_be_bytes)
}

/// Full UDP checksum: pseudo header (the addresses, protocol 17 and the UDP length, which sum
/// alike for IPv4 and IPv6), the UDP header as it stands and the payload.
fn udp_checksum(addrs: &[u8], udp: [u8; UDP_HLEN], payload: &[u8]) -> u16 {
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
    let total = sum(addrs) + u64::from(IPPROTO_UDP) + u64::from(udp_len) + sum(&udp) + sum(payload);
    nonzero(!fold(total))
}

/// A computed UDP checksum of 0 goes on the wire as 0xffff (0 means "none").
fn nonzero(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

/// Ones' complement sum of big-endian 16-bit words (odd tail padded with a zero byte), not yet
/// folded. 32-bit words fold to the same sum (RFC 1071), so the bulk goes four bytes at a time.
fn sum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(4);
    let mut acc: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    for pair in words.remainder().chunks(2) {
        let hi = pair.first().copied().unwrap_or(0);
        let lo = pair.get(1).copied().unwrap_or(0);
        acc += u64::from(u16::from_be_bytes([hi, lo]));
    }
    acc
}

/// Folds a ones' complement sum into 16 bits with end-around carry.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests;
