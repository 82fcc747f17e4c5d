//! A host sharded over two `SO_REUSEPORT` sockets, each with its own driver thread: clients
//! from several ports all connect through the one address, every client's session lives on
//! exactly one shard, and input reaches the shard that owns it. Real loopback sockets, every
//! wait bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wavry_net::{ClientDriver, Config, DriverConfig, IoMode, ShardedHost};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::proto::{InputMessage, Key, input_message};
use wavry_rift::session::{Event, Role, SessionConfig};

const WAIT: Duration = Duration::from_secs(10);
const CLIENTS: u8 = 6;

fn sharded(mode: IoMode) {
    let host_key = Arc::new(IdentityKey::from_seed([0x31; 32]).expect("key"));
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let net = Config::default();
    let host = ShardedHost::spawn(
        lo,
        2,
        mode,
        &net,
        &SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated),
        &host_key,
        CLIENTS as usize,
        &DriverConfig::default(),
    )
    .expect("sharded host");
    assert_eq!(host.len(), 2);
    assert!(ShardedHost::cores() >= 1);
    let clients: Vec<(Arc<IdentityKey>, ClientDriver)> = (0..CLIENTS)
        .map(|i| {
            let key = Arc::new(IdentityKey::from_seed([0x40 + i; 32]).expect("key"));
            let socket = wavry_net::bind(lo, mode, &net).expect("client socket");
            let cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
            let c = ClientDriver::connect(
                socket,
                cfg,
                key.clone(),
                host.local_addr(),
                DriverConfig::default(),
            )
            .expect("client");
            (key, c)
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    // Every client connects; the host reports each once, from one shard.
    let mut owner = HashMap::new();
    while owner.len() < CLIENTS as usize {
        let (h, e) = host
            .recv_event(deadline)
            .expect("a Connected event in time");
        match e {
            Event::Connected { peer, .. } => {
                assert!(owner.insert(peer, h).is_none(), "{peer} connected twice");
            }
            Event::Closed(r) => panic!("a host session closed: {r:?}"),
            _ => {}
        }
    }
    for (key, c) in &clients {
        loop {
            match c
                .events()
                .recv_deadline(deadline)
                .expect("client Connected")
            {
                Event::Connected { peer, .. } => {
                    assert_eq!(peer, host_key.id());
                    break;
                }
                Event::Closed(r) => panic!("client {} closed: {r:?}", key.id()),
                _ => {}
            }
        }
    }
    // A key press from each client arrives on the shard that owns its session.
    for (i, (_, c)) in clients.iter().enumerate() {
        c.send_input(InputMessage {
            timestamp_us: i as u64,
            event: Some(input_message::Event::Key(Key {
                keycode: 30 + i as u32,
                pressed: true,
            })),
        })
        .expect("send input");
    }
    let mut got = 0;
    while got < CLIENTS as usize {
        let (h, e) = host.recv_event(deadline).expect("input in time");
        if let Event::Input(input) = e {
            let i = input.timestamp_us as usize;
            assert_eq!(
                owner[&clients[i].0.id()],
                h,
                "input came through another shard"
            );
            got += 1;
        }
    }
    for (_, c) in clients {
        c.shutdown().expect("client ends cleanly");
    }
    let stats = host.shutdown().expect("shards end cleanly");
    assert_eq!(stats.len(), 2);
    let received: u64 = stats.iter().map(|s| s.datagrams_received).sum();
    assert!(
        received >= u64::from(CLIENTS) * 3,
        "handshakes and input reached the shards"
    );
}

#[test]
fn sharded_host_over_uring() {
    sharded(IoMode::Uring);
}

#[test]
fn sharded_host_over_portable() {
    sharded(IoMode::Portable);
}
