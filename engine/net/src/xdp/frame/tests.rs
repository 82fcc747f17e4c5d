//! Parse and rewrite against etherparse as the oracle; truncations, refusals, arbitrary bytes.

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
    let mut ip =
        Ipv4Header::new(0, 9, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2]).expect("ipv4 header");
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
