//! A counting global allocator proves the per-packet paths allocate nothing: header decode and
//! encode, and sealing + opening 10 000 datagrams in place through a `SecureChannel`.

mod support;

use wavry_rift::{
    crypto::{PacketKey, SecureChannel},
    identity::WavryId,
    replay::ReplayWindow,
    wire::{Header, RelayHeader, RelayType, TransportHeader},
};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

/// One test function so no other test thread allocates while we count.
#[test]
fn per_packet_paths_do_not_allocate() {
    let id = WavryId::from_bytes([1; 32]);
    let mut tx = SecureChannel::new(
        PacketKey::new(&[1; 32]),
        PacketKey::new(&[2; 32]),
        id,
        [0; 32],
    );
    let mut rx = SecureChannel::new(
        PacketKey::new(&[2; 32]),
        PacketKey::new(&[1; 32]),
        id,
        [0; 32],
    );
    let mut buf = vec![0u8; 1500];
    let mut relay = [0u8; 20];
    let mut window = ReplayWindow::new();
    // Warm-up outside the count.
    let (_, n) = tx.seal(7, &mut buf, 1200).unwrap();
    rx.open(&mut buf[..n]).unwrap();

    let headers = support::alloc::during(|| {
        for i in 1..10_000u64 {
            let h = TransportHeader {
                alias: 7,
                packet_id: i,
                key_phase: false,
            };
            h.encode(&mut buf).unwrap();
            assert_eq!(Header::decode(&buf).unwrap(), Header::Transport(h));
            RelayHeader {
                kind: RelayType::Forward,
                flags: 0,
                session_id: [3; 16],
            }
            .encode(&mut relay)
            .unwrap();
            assert!(RelayHeader::decode(&relay).is_ok());
            window.check_and_update(i).unwrap();
        }
    });
    assert_eq!(headers, 0, "header encode/decode allocated");

    let packets = support::alloc::during(|| {
        for _ in 0..10_000 {
            let (_, n) = tx.seal(7, &mut buf, 1200).unwrap();
            let opened = rx.open(&mut buf[..n]).unwrap();
            assert_eq!(opened.payload.len(), 1200);
        }
    });
    assert_eq!(packets, 0, "seal/open allocated");
}
