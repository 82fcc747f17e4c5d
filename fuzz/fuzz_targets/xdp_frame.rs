//! AF_XDP frames (`wavry_net::xdp::frame`): arbitrary bytes never panic, and every frame that
//! parses is readdressed in place into one that parses back to exactly the new addresses, with
//! the same payload, the VLAN tag and padding untouched, and a UDP checksum that still verifies.
#![no_main]
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use wavry_net::xdp::frame::{FrameError, UdpFrame, parse, rewrite};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x51];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd1];

/// Whether the UDP checksum verifies (full ones' complement sum over the pseudo header, UDP
/// header and payload); `None` when the datagram carries none (0).
fn udp_checksum_ok(frame: &[u8], p: &UdpFrame) -> Option<bool> {
    let udp = &frame[p.l4..p.payload.end];
    if udp[6..8] == [0, 0] {
        return None;
    }
    let mut acc: u64 = 17 + udp.len() as u64;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            acc += u64::from(pair[0]) << 8 | u64::from(*pair.get(1).unwrap_or(&0));
        }
    };
    for ip in [p.src.ip(), p.dst.ip()] {
        match ip {
            std::net::IpAddr::V4(ip) => add(&ip.octets()),
            std::net::IpAddr::V6(ip) => add(&ip.octets()),
        }
    }
    add(udp);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    Some(acc == 0xffff)
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse(data) else { return };
    let v4: [SocketAddr; 2] = [
        "192.0.2.1:4433".parse().expect("v4"),
        "198.51.100.2:50000".parse().expect("v4"),
    ];
    let v6: [SocketAddr; 2] = [
        "[2001:db8::1]:4433".parse().expect("v6"),
        "[2001:db8::2]:50000".parse().expect("v6"),
    ];
    let ([src, dst], other) = if parsed.is_ipv6() { (v6, v4) } else { (v4, v6) };

    let mut frame = data.to_vec();
    rewrite(&mut frame, &parsed, SRC_MAC, DST_MAC, src, dst).expect("a parsed frame rewrites");
    let again = parse(&frame).expect("a rewritten frame parses");
    assert_eq!((again.src, again.dst), (src, dst));
    assert_eq!((again.src_mac, again.dst_mac), (SRC_MAC, DST_MAC));
    assert_eq!((again.l3, again.l4), (parsed.l3, parsed.l4));
    assert_eq!(again.payload, parsed.payload);
    assert_eq!(frame[again.payload.clone()], data[parsed.payload.clone()]);
    assert_eq!(
        frame[12..parsed.l3],
        data[12..parsed.l3],
        "EtherType / VLAN tag kept"
    );
    assert_eq!(
        frame[parsed.payload.end..],
        data[parsed.payload.end..],
        "padding kept"
    );
    match (
        udp_checksum_ok(data, &parsed),
        udp_checksum_ok(&frame, &again),
    ) {
        // Valid stays valid, invalid stays invalid (the update is incremental).
        (Some(before), Some(after)) => assert_eq!(before, after),
        // IPv4 without a checksum stays without; IPv6 without one (illegal) gets one.
        (None, after) => assert_eq!(after, parsed.is_ipv6().then_some(true)),
        (Some(_), None) => panic!("the checksum was dropped"),
    }

    let mut refused = data.to_vec();
    assert_eq!(
        rewrite(&mut refused, &parsed, SRC_MAC, DST_MAC, other[0], other[1]),
        Err(FrameError::FamilyMismatch)
    );
    assert_eq!(refused, data);
});
