//! `steer::steer_by_payload_u32`: datagrams from ONE source socket (so the kernel's 4-tuple
//! hash alone would send them all to the same shard) land on the shard their payload's u32
//! names, modulo the shard count; datagrams too short for the u32 go to shard 0.
#![cfg(target_os = "linux")]

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use wavry_net::{Backend, Config, IoMode, RecvMeta, bind_sharded, steer::steer_by_payload_u32};

fn recv_one(b: &mut impl Backend) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let mut meta = [RecvMeta::default()];
    let n = b
        .recv(
            &mut [IoSliceMut::new(&mut buf)],
            &mut meta,
            Some(Duration::from_millis(500)),
        )
        .unwrap();
    (n == 1).then(|| buf[..meta[0].len].to_vec())
}

#[test]
fn reuseport_group_is_steered_by_payload_bytes() {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut shards = bind_sharded(addr, 3, IoMode::Portable, &Config::default()).unwrap();
    steer_by_payload_u32(&shards, 16).unwrap();
    let to = shards[0].local_addr().unwrap();
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    // value % 3 = 1, 2, 0, 1, ... from one 4-tuple.
    let mut expected: [Vec<Vec<u8>>; 3] = Default::default();
    for v in [7u32, 5, 9, 1, 2, 3] {
        let mut d = vec![0xAB; 24];
        d[16..20].copy_from_slice(&v.to_be_bytes());
        d[0] = v as u8;
        src.send_to(&d, to).unwrap();
        expected[(v % 3) as usize].push(d);
    }
    let short = vec![0xCD; 10];
    src.send_to(&short, to).unwrap();
    expected[0].push(short);
    for (i, want) in expected.iter().enumerate() {
        for d in want {
            assert_eq!(
                recv_one(&mut shards[i]).as_deref(),
                Some(&d[..]),
                "shard {i}"
            );
        }
    }
}
