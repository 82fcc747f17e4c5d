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
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6FlowLabel, Ipv6Header, NetHeaders,
        PacketBuilder, PacketHeaders, TransportHeader, VlanHeader,
    };

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb2];
    const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc3];
    const MAC_D: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd4];
    const PAYLOAD: &[u8] = b"rift datagram, authenticated end to end";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn v4_octets(a: SocketAddr) -> [u8; 4] {
        match a.ip() {
            IpAddr::V4(ip) => ip.octets(),
            IpAddr::V6(_) => panic!("not v4"),
        }
    }

    fn v6_octets(a: SocketAddr) -> [u8; 16] {
        match a.ip() {
            IpAddr::V6(ip) => ip.octets(),
            IpAddr::V4(_) => panic!("not v6"),
        }
    }

    /// One frame from etherparse's builder: `vlan` adds one 802.1Q tag.
    fn ether(src: SocketAddr, dst: SocketAddr, vlan: bool, payload: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let mut out = Vec::new();
        match (vlan, src.ip()) {
            (false, IpAddr::V4(_)) => {
                let b = eth
                    .ipv4(v4_octets(src), v4_octets(dst), 17)
                    .udp(src.port(), dst.port());
                b.write(&mut out, payload).expect("write");
            }
            (false, IpAddr::V6(_)) => {
                let b = eth
                    .ipv6(v6_octets(src), v6_octets(dst), 17)
                    .udp(src.port(), dst.port());
                b.write(&mut out, payload).expect("write");
            }
            (true, IpAddr::V4(_)) => {
                let b = eth
                    .single_vlan(0x123.try_into().expect("vlan id"))
                    .ipv4(v4_octets(src), v4_octets(dst), 17)
                    .udp(src.port(), dst.port());
                b.write(&mut out, payload).expect("write");
            }
            (true, IpAddr::V6(_)) => {
                let b = eth
                    .single_vlan(0x123.try_into().expect("vlan id"))
                    .ipv6(v6_octets(src), v6_octets(dst), 17)
                    .udp(src.port(), dst.port());
                b.write(&mut out, payload).expect("write");
            }
        }
        out
    }

    fn v4_frame() -> Vec<u8> {
        ether(
            addr("198.51.100.7:40000"),
            addr("203.0.113.9:4433"),
            false,
            PAYLOAD,
        )
    }

    fn v6_frame() -> Vec<u8> {
        ether(
            addr("[2001:db8::7]:40000"),
            addr("[2001:db8:1::9]:4433"),
            false,
            PAYLOAD,
        )
    }

    /// IPv4 with 8 bytes of options (IHL 7): NOP, NOP, NOP, EOL and padding.
    fn v4_options_frame(payload: &[u8]) -> Vec<u8> {
        let mut ip = Ipv4Header::new(0, 9, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2])
            .expect("ipv4 header");
        ip.options = [1, 1, 1, 0, 0, 0, 0, 0].into();
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv4(ip, Ipv4Extensions::default()))
            .udp(5000, 6000);
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("write");
        out
    }

    /// Every valid shape the tests exercise.
    fn valid_frames() -> Vec<Vec<u8>> {
        let (s4, d4) = (addr("192.0.2.1:1"), addr("192.0.2.2:65535"));
        let (s6, d6) = (addr("[fe80::1]:9"), addr("[ff02::fb]:5353"));
        vec![
            v4_frame(),
            v6_frame(),
            ether(s4, d4, true, PAYLOAD),
            ether(s6, d6, true, PAYLOAD),
            ether(s4, d4, false, &[]),
            ether(s6, d6, false, &[0x5a]),
            v4_options_frame(PAYLOAD),
        ]
    }

    fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
        let hlen = usize::from(frame[l3] & 0x0f) * 4;
        frame[l3 + 10..l3 + 12].fill(0);
        let check = !fold(sum(&frame[l3..l3 + hlen]));
        frame[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn v4(&mut self) -> SocketAddr {
            let x = self.next();
            SocketAddr::new(Ipv4Addr::from((x >> 16) as u32).into(), x as u16)
        }

        fn v6(&mut self) -> SocketAddr {
            let ip = (u128::from(self.next()) << 64) | u128::from(self.next());
            SocketAddr::new(Ipv6Addr::from(ip).into(), self.next() as u16)
        }
    }

    /// What etherparse sees in a frame: (MACs, addresses, TTL, VLAN, UDP payload), after
    /// checking both checksums against its own full computation.
    struct Seen {
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: SocketAddr,
        dst: SocketAddr,
        ttl: u8,
        vlan: Option<VlanHeader>,
        payload: Vec<u8>,
    }

    fn oracle(frame: &[u8]) -> Seen {
        let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses it");
        let Some(etherparse::LinkHeader::Ethernet2(eth)) = h.link else {
            panic!("no ethernet header");
        };
        let Some(TransportHeader::Udp(udp)) = h.transport else {
            panic!("no udp header");
        };
        let etherparse::PayloadSlice::Udp(payload) = h.payload else {
            panic!("no udp payload");
        };
        let (src, dst, ttl) = match h.net.expect("ip header") {
            NetHeaders::Ipv4(ip, _) => {
                assert_eq!(
                    ip.header_checksum,
                    ip.calc_header_checksum(),
                    "ipv4 checksum"
                );
                if udp.checksum != 0 {
                    assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
                }
                (
                    SocketAddr::new(Ipv4Addr::from(ip.source).into(), udp.source_port),
                    SocketAddr::new(Ipv4Addr::from(ip.destination).into(), udp.destination_port),
                    ip.time_to_live,
                )
            }
            NetHeaders::Ipv6(ip, _) => {
                assert_eq!(udp.checksum, udp.calc_checksum_ipv6(&ip, payload).unwrap());
                (
                    SocketAddr::new(Ipv6Addr::from(ip.source).into(), udp.source_port),
                    SocketAddr::new(Ipv6Addr::from(ip.destination).into(), udp.destination_port),
                    ip.hop_limit,
                )
            }
        };
        Seen {
            src_mac: eth.source,
            dst_mac: eth.destination,
            src,
            dst,
            ttl,
            vlan: h.vlan,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn checksum_helpers_match_rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&bytes)), 0xddf2);
        // Any split point and odd tails agree with plain 16-bit summation.
        for len in 0..bytes.len() {
            let words: u64 = bytes[..len]
                .chunks(2)
                .map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0)))
                .sum();
            assert_eq!(fold(sum(&bytes[..len])), fold(words));
        }
    }

    #[test]
    fn parses_ipv4() {
        let frame = v4_frame();
        let p = parse(&frame).expect("parses");
        assert_eq!(p.src_mac, MAC_A);
        assert_eq!(p.dst_mac, MAC_B);
        assert_eq!(p.src, addr("198.51.100.7:40000"));
        assert_eq!(p.dst, addr("203.0.113.9:4433"));
        assert_eq!((p.l3, p.l4), (14, 34));
        assert_eq!(p.payload, 42..frame.len());
        assert_eq!(&frame[p.payload.clone()], PAYLOAD);
        assert!(!p.is_ipv6());
    }

    #[test]
    fn parses_ipv6() {
        let frame = v6_frame();
        let p = parse(&frame).expect("parses");
        assert_eq!(p.src, addr("[2001:db8::7]:40000"));
        assert_eq!(p.dst, addr("[2001:db8:1::9]:4433"));
        assert_eq!((p.l3, p.l4), (14, 54));
        assert_eq!(&frame[p.payload.clone()], PAYLOAD);
        assert!(p.is_ipv6());
    }

    #[test]
    fn parses_one_vlan_tag_8021q_and_8021ad() {
        for src in [addr("10.1.2.3:7"), addr("[2001:db8::3]:7")] {
            let dst = if src.is_ipv4() {
                addr("10.3.2.1:8")
            } else {
                addr("[2001:db8::1]:8")
            };
            let mut frame = ether(src, dst, true, PAYLOAD);
            for tpid in [0x8100u16, 0x88a8] {
                frame[12..14].copy_from_slice(&tpid.to_be_bytes());
                let p = parse(&frame).expect("parses");
                assert_eq!(p.l3, 18);
                assert_eq!((p.src, p.dst), (src, dst));
                assert_eq!(&frame[p.payload.clone()], PAYLOAD);
            }
        }
    }

    #[test]
    fn parses_ipv4_options() {
        let frame = v4_options_frame(PAYLOAD);
        let p = parse(&frame).expect("parses");
        assert_eq!((p.l3, p.l4), (14, 14 + 28));
        assert_eq!(p.src, addr("10.0.0.1:5000"));
        assert_eq!(p.dst, addr("10.0.0.2:6000"));
        assert_eq!(&frame[p.payload.clone()], PAYLOAD);
    }

    #[test]
    fn ethernet_padding_is_excluded_and_kept() {
        for frame in [
            ether(addr("192.0.2.1:1"), addr("192.0.2.2:2"), false, b"hi"),
            ether(addr("[::1]:1"), addr("[::2]:2"), false, b"hi"),
        ] {
            let mut padded = frame.clone();
            padded.resize(frame.len().max(60) + 4, 0xee);
            let p = parse(&padded).expect("parses");
            assert_eq!(p.payload.end, frame.len());
            assert_eq!(&padded[p.payload.clone()], b"hi");
            let (s, d) = if p.is_ipv6() {
                (addr("[2001:db8::a]:10"), addr("[2001:db8::b]:11"))
            } else {
                (addr("203.0.113.1:10"), addr("203.0.113.2:11"))
            };
            rewrite(&mut padded, &p, MAC_C, MAC_D, s, d).expect("rewrites");
            assert!(
                padded[frame.len()..].iter().all(|&b| b == 0xee),
                "padding untouched"
            );
            let seen = oracle(&padded);
            assert_eq!((seen.src, seen.dst), (s, d));
            assert_eq!(seen.payload, b"hi");
        }
    }

    #[test]
    fn rewrite_matches_full_recomputation() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let v6 = rng.next() & 1 == 1;
            let vlan = rng.next() & 1 == 1;
            let (s, d, ns, nd) = if v6 {
                (rng.v6(), rng.v6(), rng.v6(), rng.v6())
            } else {
                (rng.v4(), rng.v4(), rng.v4(), rng.v4())
            };
            let len = rng.below(300);
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut frame = ether(s, d, vlan, &payload);
            let before = oracle(&frame);
            let p = parse(&frame).expect("parses");
            assert_eq!((p.src, p.dst), (s, d));
            rewrite(&mut frame, &p, MAC_C, MAC_D, ns, nd).expect("rewrites");
            let seen = oracle(&frame);
            assert_eq!((seen.src_mac, seen.dst_mac), (MAC_C, MAC_D));
            assert_eq!((seen.src, seen.dst), (ns, nd));
            assert_eq!(seen.ttl, TTL);
            assert_eq!(seen.vlan, before.vlan, "VLAN tag kept");
            assert_eq!(seen.payload, payload);
            let again = parse(&frame).expect("still parses");
            assert_eq!((again.src, again.dst), (ns, nd));
            assert_eq!(again.payload, p.payload);
        }
    }

    #[test]
    fn rewrite_ipv4_with_options() {
        let mut frame = v4_options_frame(PAYLOAD);
        let p = parse(&frame).expect("parses");
        let (s, d) = (addr("100.64.0.1:1111"), addr("100.64.0.2:2222"));
        rewrite(&mut frame, &p, MAC_C, MAC_D, s, d).expect("rewrites");
        assert_eq!(
            &frame[34..42],
            &[1, 1, 1, 0, 0, 0, 0, 0],
            "options untouched"
        );
        let seen = oracle(&frame);
        assert_eq!((seen.src, seen.dst, seen.ttl), (s, d, TTL));
        assert_eq!(seen.payload, PAYLOAD);
    }

    #[test]
    fn ipv4_without_udp_checksum_stays_without() {
        let mut frame = v4_frame();
        frame[40..42].fill(0);
        let p = parse(&frame).expect("parses");
        rewrite(
            &mut frame,
            &p,
            MAC_C,
            MAC_D,
            addr("1.2.3.4:5"),
            addr("6.7.8.9:10"),
        )
        .expect("rewrites");
        assert_eq!(&frame[40..42], &[0, 0]);
        let seen = oracle(&frame);
        assert_eq!(seen.src, addr("1.2.3.4:5"));
    }

    #[test]
    fn ipv6_zero_udp_checksum_is_filled_in() {
        let mut frame = v6_frame();
        frame[60..62].fill(0);
        let p = parse(&frame).expect("parses");
        let (s, d) = (addr("[2001:db8::aa]:5"), addr("[2001:db8::bb]:10"));
        rewrite(&mut frame, &p, MAC_C, MAC_D, s, d).expect("rewrites");
        assert_ne!(&frame[60..62], &[0, 0]);
        // The oracle compares the checksum with etherparse's full computation.
        assert_eq!((oracle(&frame).src, oracle(&frame).dst), (s, d));
    }

    #[test]
    fn udp_checksum_computing_to_zero_is_sent_as_ffff() {
        // Search for a port whose full checksum is 0, and check both build and rewrite send
        // 0xffff for it (0 would mean "no checksum" on IPv4, and is illegal on IPv6).
        for (s, d) in [
            (addr("192.0.2.1:0"), addr("192.0.2.2:0")),
            (addr("[2001:db8::1]:0"), addr("[2001:db8::2]:0")),
        ] {
            let mut buf = [0u8; 128];
            let found = (0..=u16::MAX).find(|&port| {
                let s = SocketAddr::new(s.ip(), port);
                let n = build(&mut buf, MAC_A, MAC_B, s, d, b"x").expect("builds");
                n > 0 && buf[n - 3..n - 1] == [0xff, 0xff]
            });
            let port = found.expect("some port sums to zero");
            let target = SocketAddr::new(s.ip(), port);
            let mut frame = ether(s, d, false, b"x");
            let p = parse(&frame).expect("parses");
            rewrite(&mut frame, &p, MAC_A, MAC_B, target, d).expect("rewrites");
            let ck = p.l4 + 6;
            assert_eq!(&frame[ck..ck + 2], &[0xff, 0xff]);
            assert_eq!(oracle(&frame).src, target);
        }
    }

    #[test]
    fn build_output_is_valid_for_etherparse() {
        let mut buf = [0u8; 1600];
        for (s, d) in [
            (addr("192.0.2.1:4433"), addr("198.51.100.2:50000")),
            (addr("[2001:db8::1]:4433"), addr("[2001:db8::2]:50000")),
        ] {
            for payload in [&b""[..], b"a", PAYLOAD, &[0xffu8; 1200][..]] {
                let n = build(&mut buf, MAC_A, MAC_B, s, d, payload).expect("builds");
                let seen = oracle(&buf[..n]);
                assert_eq!((seen.src_mac, seen.dst_mac), (MAC_A, MAC_B));
                assert_eq!((seen.src, seen.dst, seen.ttl), (s, d, TTL));
                assert_eq!(seen.vlan, None);
                assert_eq!(seen.payload, payload);
                let p = parse(&buf[..n]).expect("parses");
                assert_eq!(&buf[p.payload.clone()], payload);
                let h = PacketHeaders::from_ethernet_slice(&buf[..n]).expect("parses");
                match h.net.expect("ip") {
                    NetHeaders::Ipv4(ip, _) => {
                        assert!(ip.dont_fragment && !ip.more_fragments);
                        assert_eq!(ip.identification, 0);
                    }
                    NetHeaders::Ipv6(ip, _) => {
                        assert_eq!(ip.flow_label, Ipv6FlowLabel::ZERO);
                        assert_eq!(ip.traffic_class, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn build_matches_etherparse_bytes() {
        // Same fields as etherparse's builder sets, except DF, which build sets.
        let (s, d) = (addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2"));
        let theirs = ether(s, d, false, PAYLOAD);
        let mut ours = [0u8; 256];
        let n = build(&mut ours, MAC_A, MAC_B, s, d, PAYLOAD).expect("builds");
        // etherparse's ipv6() takes the hop limit we passed it (17); ours is TTL.
        let mut theirs = theirs;
        theirs[21] = TTL;
        assert_eq!(&ours[..n], &theirs[..]);
    }

    #[test]
    fn build_refuses_small_buffers_long_payloads_and_mixed_families() {
        let (s, d) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        let mut buf = [0u8; 64];
        let need = ETH_HLEN + 20 + 8 + 5;
        for len in 0..need {
            assert_eq!(
                build(&mut buf[..len], MAC_A, MAC_B, s, d, b"hello"),
                Err(FrameError::TooShort)
            );
        }
        assert_eq!(
            build(&mut buf[..need], MAC_A, MAC_B, s, d, b"hello"),
            Ok(need)
        );
        assert_eq!(
            build(&mut buf, MAC_A, MAC_B, s, addr("[::1]:2"), b"x"),
            Err(FrameError::FamilyMismatch)
        );
        let big = vec![0u8; 65_535 - 20 - 8 + 1];
        let mut huge = vec![0u8; 70_000];
        assert_eq!(
            build(&mut huge, MAC_A, MAC_B, s, d, &big),
            Err(FrameError::BadLength)
        );
        assert!(build(&mut huge, MAC_A, MAC_B, s, d, &big[1..]).is_ok());
        let (s6, d6) = (addr("[::1]:1"), addr("[::2]:2"));
        let big6 = vec![0u8; 65_535 - 8 + 1];
        assert_eq!(
            build(&mut huge, MAC_A, MAC_B, s6, d6, &big6),
            Err(FrameError::BadLength)
        );
        let n = build(&mut huge, MAC_A, MAC_B, s6, d6, &big6[1..]).expect("largest v6");
        assert_eq!(
            parse(&huge[..n]).expect("parses").payload.len(),
            big6.len() - 1
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for frame in valid_frames() {
            assert!(parse(&frame).is_ok());
            for len in 0..frame.len() {
                assert!(
                    parse(&frame[..len]).is_err(),
                    "prefix of {len} bytes parsed"
                );
            }
        }
        assert_eq!(parse(&v4_frame()[..13]), Err(FrameError::Truncated));
        assert_eq!(parse(&v4_frame()[..30]), Err(FrameError::Truncated));
        let frame = v4_frame();
        assert_eq!(parse(&frame[..frame.len() - 1]), Err(FrameError::Truncated));
        let frame = v6_frame();
        assert_eq!(parse(&frame[..frame.len() - 1]), Err(FrameError::Truncated));
    }

    #[test]
    fn fragments_are_refused() {
        for (more, offset) in [(true, 0u16), (false, 1), (true, 100), (false, 0x1fff)] {
            let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2])
                .expect("ipv4 header");
            ip.more_fragments = more;
            ip.fragment_offset = offset.try_into().expect("offset");
            let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ip(IpHeaders::Ipv4(ip, Ipv4Extensions::default()))
                .udp(1, 2);
            let mut frame = Vec::new();
            b.write(&mut frame, PAYLOAD).expect("write");
            assert_eq!(
                parse(&frame),
                Err(FrameError::Fragment),
                "MF {more} offset {offset}"
            );
        }
        // DF alone is fine.
        let mut frame = v4_frame();
        frame[20] |= 0x40;
        fix_ipv4_checksum(&mut frame, 14);
        assert!(parse(&frame).is_ok());
    }

    #[test]
    fn ipv6_extension_headers_and_other_protocols_are_refused() {
        for nh in [0u8, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254] {
            let mut frame = v6_frame();
            frame[20] = nh;
            assert_eq!(
                parse(&frame),
                Err(FrameError::Ipv6ExtensionHeaders),
                "nh {nh}"
            );
        }
        for nh in [6u8, 58, 59, 132] {
            let mut frame = v6_frame();
            frame[20] = nh;
            assert_eq!(parse(&frame), Err(FrameError::NotUdp), "nh {nh}");
        }
        // The same refusals on an etherparse-built IPv6 frame with a real hop-by-hop header.
        let ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: IpNumber::UDP,
            hop_limit: 64,
            source: [1; 16],
            destination: [2; 16],
        };
        let exts = etherparse::Ipv6Extensions {
            hop_by_hop_options: Some(
                etherparse::Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[1, 4, 0, 0, 0, 0])
                    .expect("hop by hop"),
            ),
            ..Default::default()
        };
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv6(ip, exts))
            .udp(1, 2);
        let mut frame = Vec::new();
        b.write(&mut frame, PAYLOAD).expect("write");
        assert_eq!(frame[20], 0, "next header is hop-by-hop");
        assert_eq!(parse(&frame), Err(FrameError::Ipv6ExtensionHeaders));
    }

    #[test]
    fn other_ethertypes_and_ip_protocols_are_refused() {
        let mut frame = v4_frame();
        frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(FrameError::NotIp));
        // Two VLAN tags: the inner EtherType is a tag again.
        let mut frame = ether(addr("10.0.0.1:1"), addr("10.0.0.2:2"), true, PAYLOAD);
        frame[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(FrameError::NotIp));
        let mut frame = v4_frame();
        frame[23] = 6;
        fix_ipv4_checksum(&mut frame, 14);
        assert_eq!(parse(&frame), Err(FrameError::NotUdp));
    }

    #[test]
    fn bad_ip_headers_are_refused() {
        // IPv4 EtherType carrying version 6, and the reverse.
        let mut frame = v4_frame();
        frame[14] = 0x65;
        assert_eq!(parse(&frame), Err(FrameError::BadIpHeader));
        let mut frame = v6_frame();
        frame[14] = 0x45;
        assert_eq!(parse(&frame), Err(FrameError::BadIpHeader));
        for ihl in 0..5u8 {
            let mut frame = v4_frame();
            frame[14] = 0x40 | ihl;
            assert_eq!(parse(&frame), Err(FrameError::BadIpHeader), "IHL {ihl}");
        }
        // IHL 15 reaches past this short frame's header.
        let mut frame = ether(addr("10.0.0.1:1"), addr("10.0.0.2:2"), false, &[1; 20]);
        frame[14] = 0x4f;
        assert_eq!(parse(&frame), Err(FrameError::Truncated));
    }

    #[test]
    fn bad_ipv4_header_checksum_is_refused() {
        let mut frame = v4_frame();
        frame[24] ^= 0x01;
        assert_eq!(parse(&frame), Err(FrameError::BadChecksum));
        let mut frame = v4_frame();
        frame[26] ^= 0x80; // source address, checksum not updated
        assert_eq!(parse(&frame), Err(FrameError::BadChecksum));
        // A bad UDP checksum is not checked on purpose.
        let mut frame = v4_frame();
        frame[40] ^= 0xff;
        assert!(parse(&frame).is_ok());
    }

    #[test]
    fn inconsistent_lengths_are_refused() {
        let set16 = |f: &mut Vec<u8>, at: usize, v: u16| {
            f[at..at + 2].copy_from_slice(&v.to_be_bytes());
        };
        let frame = v4_frame();
        let total = u16::from_be_bytes([frame[16], frame[17]]);
        // IPv4 total length below header + UDP header.
        for bad in [0, 20, 27] {
            let mut f = frame.clone();
            set16(&mut f, 16, bad);
            fix_ipv4_checksum(&mut f, 14);
            assert_eq!(parse(&f), Err(FrameError::BadLength), "total {bad}");
        }
        // IPv4 total length past the frame.
        let mut f = frame.clone();
        set16(&mut f, 16, total + 1);
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(FrameError::Truncated));
        // IPv4 total length shorter than the UDP length (the rest would look like padding).
        let mut f = frame.clone();
        set16(&mut f, 16, total - 1);
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(FrameError::BadLength));
        // UDP length disagreeing with the IP length, either way, or below 8.
        let udp_len = total - 20;
        for bad in [udp_len - 1, udp_len + 1, 0, 7] {
            let mut f = frame.clone();
            set16(&mut f, 38, bad);
            assert_eq!(parse(&f), Err(FrameError::BadLength), "udp length {bad}");
        }
        let frame = v6_frame();
        let plen = u16::from_be_bytes([frame[18], frame[19]]);
        for bad in [0, 7] {
            let mut f = frame.clone();
            set16(&mut f, 18, bad);
            assert_eq!(
                parse(&f),
                Err(FrameError::BadLength),
                "payload length {bad}"
            );
        }
        let mut f = frame.clone();
        set16(&mut f, 18, plen + 1);
        assert_eq!(parse(&f), Err(FrameError::Truncated));
        let mut f = frame.clone();
        set16(&mut f, 58, plen + 1);
        assert_eq!(parse(&f), Err(FrameError::BadLength));
    }

    #[test]
    fn rewrite_refuses_other_families_and_leaves_the_frame() {
        let v4s = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let v6s = (addr("[::1]:1"), addr("[::2]:2"));
        for frame in [v4_frame(), v6_frame()] {
            let p = parse(&frame).expect("parses");
            let (same, other) = if p.is_ipv6() { (v6s, v4s) } else { (v4s, v6s) };
            for (s, d) in [(other.0, other.1), (same.0, other.1), (other.0, same.1)] {
                let mut f = frame.clone();
                assert_eq!(
                    rewrite(&mut f, &p, MAC_C, MAC_D, s, d),
                    Err(FrameError::FamilyMismatch)
                );
                assert_eq!(f, frame, "untouched");
            }
        }
    }

    #[test]
    fn rewrite_refuses_a_parse_of_another_frame() {
        let (s, d) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let long = ether(s, d, false, &[7; 100]);
        let tagged = ether(s, d, true, PAYLOAD);
        let short = ether(s, d, false, b"x");
        let options = v4_options_frame(PAYLOAD);
        let v6 = v6_frame();
        let cases = [
            (&long, &short),
            (&tagged, &short),
            (&short, &tagged),
            (&options, &long),
            (&long, &options),
        ];
        for (from, to) in cases {
            let p = parse(from).expect("parses");
            let mut f = to.clone();
            assert_eq!(
                rewrite(&mut f, &p, MAC_C, MAC_D, s, d),
                Err(FrameError::ParseMismatch)
            );
            assert_eq!(&f, to, "untouched");
        }
        // A v4 parse on a v6 frame of the right shape is refused too.
        let mut p = parse(&long).expect("parses");
        p.l4 = 54;
        p.payload = 62..v6.len();
        let mut f = v6.clone();
        assert_eq!(
            rewrite(&mut f, &p, MAC_C, MAC_D, s, d),
            Err(FrameError::ParseMismatch)
        );
        assert_eq!(f, v6);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let seeds = valid_frames();
        for i in 0..20_000 {
            let mut frame = if i % 4 == 0 {
                // Pure noise, with the IPv4 / IPv6 EtherType half of the time.
                let len = rng.below(256);
                let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if len >= 14 && rng.next() & 1 == 0 {
                    let et: u16 = if rng.next() & 1 == 0 { 0x0800 } else { 0x86dd };
                    f[12..14].copy_from_slice(&et.to_be_bytes());
                }
                f
            } else {
                // A valid frame with a few bytes flipped and possibly cut or extended.
                let mut f = seeds[rng.below(seeds.len())].clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(f.len());
                    f[at] ^= 1 << rng.below(8);
                }
                match rng.below(4) {
                    0 => f.truncate(rng.below(f.len() + 1)),
                    1 => f.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
                    _ => {}
                }
                f
            };
            let Ok(p) = parse(&frame) else { continue };
            assert!(p.l3 < p.l4 && p.l4 + 8 == p.payload.start);
            assert!(p.payload.start <= p.payload.end && p.payload.end <= frame.len());
            let (s, d) = if p.is_ipv6() {
                (rng.v6(), rng.v6())
            } else {
                (rng.v4(), rng.v4())
            };
            let payload = frame[p.payload.clone()].to_vec();
            rewrite(&mut frame, &p, MAC_C, MAC_D, s, d).expect("rewrites its own parse");
            let again = parse(&frame).expect("re-parses");
            assert_eq!((again.src, again.dst), (s, d));
            assert_eq!(frame[again.payload.clone()], payload[..]);
            // A mismatched parse (from another random frame) must not panic either.
            let mut other = seeds[rng.below(seeds.len())].clone();
            let _ = rewrite(&mut other, &p, MAC_C, MAC_D, s, d);
        }
    }
}
