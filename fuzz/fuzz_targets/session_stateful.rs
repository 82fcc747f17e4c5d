//! Stateful fuzzing after authentication: a client and a host (fixed identities, host policy
//! `AnyAuthenticated`) complete a real handshake in-process, then the input is read as a
//! program of operations: correctly sealed messages of every kind (video chunks, parity,
//! audio, feedback, NACKs, reliable control, file messages, raw bytes) in either direction,
//! packet-id jumps, replays of earlier datagrams, time passing, real traffic exchanged and
//! application calls; rekeys (the host rekeys every few packets and milliseconds, and forged
//! Rekey/RekeyAck messages arrive), path messages, and the client's datagrams from a second
//! address (roaming back and forth). Nothing may panic, and the receive and reliable bounds
//! must hold.
//! (The existing targets stop at decryption; this one reaches what lies behind it.)
#![no_main]
use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    media::{AudioPacketRef, FecPacketRef, FileChunkRef, ShardLengths, VideoChunkRef},
    proto::{self, control_message::Content as Ctl},
    session::{Event, MAX_UNACKED, Role, Session, SessionConfig},
    transfer::Resume,
    wire::Header,
};

fn keys() -> &'static (Arc<IdentityKey>, Arc<IdentityKey>) {
    static KEYS: OnceLock<(Arc<IdentityKey>, Arc<IdentityKey>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            Arc::new(IdentityKey::from_seed([2; 32]).expect("seed")),
            Arc::new(IdentityKey::from_seed([1; 32]).expect("seed")),
        )
    })
}

/// Reads the fuzz input; past its end every read is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    /// Mostly small values (ids near the stream), sometimes any.
    fn id(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => u64::from(self.u8()),
            1 => u64::from(self.u16()),
            2 => self.u64(),
            _ => u64::MAX - u64::from(self.u8()),
        }
    }
    fn bytes(&mut self, max: usize) -> &[u8] {
        let n = (usize::from(self.u16()) % (max + 1)).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

struct Rig {
    now: Instant,
    client: Session,
    host: Session,
    ca: SocketAddr,
    ha: SocketAddr,
    /// The client's second address and whether its datagrams come from it now.
    alt: SocketAddr,
    roamed: bool,
    buf: Vec<u8>,
    /// Sealed datagrams kept for replays: (to_host, bytes).
    captured: Vec<(bool, Vec<u8>)>,
    /// The next injected datagram's packet id is at least this.
    jump: u64,
    frame: Vec<u8>,
}

impl Rig {
    fn new() -> Option<Self> {
        let (ck, hk) = keys();
        let (ca, ha): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().ok()?, "10.0.0.2:2".parse().ok()?);
        let now = Instant::now();
        let mut client = Session::client(
            now,
            SessionConfig::new(Role::Client, PeerPolicy::Pinned(hk.id())),
            ck.clone(),
            ha,
        )
        .ok()?;
        let mut buf = vec![0u8; 4096];
        let t = client.poll_transmit(now, &mut buf, 1)?;
        let Ok(Header::Handshake(h)) = Header::decode(&buf[..t.len]) else {
            return None;
        };
        let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated);
        host_cfg.rekey_interval = Duration::from_millis(40);
        host_cfg.rekey_after_packets = 48;
        host_cfg.rekey_grace = Duration::from_millis(30);
        let host = Session::accept(now, host_cfg, hk.clone(), ca, h, &buf[30..t.len]).ok()?;
        let mut r = Self {
            now,
            client,
            host,
            ca,
            ha,
            alt: "10.0.0.3:7".parse().ok()?,
            roamed: false,
            buf,
            captured: Vec::new(),
            jump: 0,
            frame: (0..60_000u32).map(|i| (i * 7) as u8).collect(),
        };
        for _ in 0..50 {
            r.pump(64);
            if r.client.is_connected() && r.host.is_connected() {
                return Some(r);
            }
            r.advance(Duration::from_millis(1));
        }
        None
    }

    /// Exchanges real traffic, at most `rounds` datagrams each way.
    fn pump(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let mut moved = false;
            if let Some(t) = self.host.poll_transmit(self.now, &mut self.buf, 4) {
                let seg = t.segment_size.unwrap_or(t.len).max(1);
                for at in (0..t.len).step_by(seg) {
                    let end = (at + seg).min(t.len);
                    self.client
                        .handle_datagram(self.now, self.ha, &mut self.buf[at..end]);
                }
                moved = true;
            }
            if let Some(t) = self.client.poll_transmit(self.now, &mut self.buf, 4) {
                let seg = t.segment_size.unwrap_or(t.len).max(1);
                let from = self.client_addr();
                for at in (0..t.len).step_by(seg) {
                    let end = (at + seg).min(t.len);
                    self.host
                        .handle_datagram(self.now, from, &mut self.buf[at..end]);
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.drain();
    }

    fn client_addr(&self) -> SocketAddr {
        if self.roamed { self.alt } else { self.ca }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for s in [&mut self.client, &mut self.host] {
            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                s.handle_timeout(self.now);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::Frame(f) => self.client.recycle(f),
                Event::FileData { data, .. } => self.client.recycle_file_data(data),
                Event::FileOffered(o) => {
                    let _ = self.client.accept_file(self.now, o.file_id, Resume::Start);
                }
                _ => {}
            }
        }
        while let Some(e) = self.host.poll_event() {
            if let Event::FileOffered(o) = e {
                let _ = self.host.refuse_file(self.now, o.file_id, "no");
            }
        }
    }

    /// Seals `plain` on one side and delivers it to the other (and keeps a copy).
    fn inject(&mut self, to_host: bool, plain: &[u8]) {
        let client_addr = self.client_addr();
        let (sender, receiver, from) = if to_host {
            (&mut self.client, &mut self.host, client_addr)
        } else {
            (&mut self.host, &mut self.client, self.ha)
        };
        let Some((_, n)) = sender.seal_for_test(self.jump, plain, &mut self.buf) else {
            return;
        };
        if self.captured.len() < 32 {
            self.captured.push((to_host, self.buf[..n].to_vec()));
        }
        receiver.handle_datagram(self.now, from, &mut self.buf[..n]);
    }
}

fn message(content: proto::message::Content, seq: u64) -> Vec<u8> {
    proto::Message {
        content: Some(content),
        reliable_seq: seq,
    }
    .encode_to_vec()
}

fn control(c: Ctl, seq: u64) -> Vec<u8> {
    message(
        proto::message::Content::Control(proto::ControlMessage { content: Some(c) }),
        seq,
    )
}

fn step(r: &mut Rig, inp: &mut Input<'_>) {
    let op = inp.u8();
    let to_host = op & 0x80 != 0;
    let mut out = Vec::new();
    match op % 14 {
        0 => {
            let frame_id = inp.id();
            let chunk_index = u32::from(inp.u16());
            let chunk_count = u32::from(inp.u16());
            let timestamp_us = inp.id();
            let payload = inp.bytes(1_400);
            VideoChunkRef {
                frame_id,
                chunk_index,
                chunk_count,
                timestamp_us,
                keyframe: true,
                payload,
                capture_us: 0,
                encode_us: 0,
            }
            .append_to(&mut out);
        }
        1 => {
            let p = FecPacketRef {
                group_id: inp.id(),
                first_chunk: inp.id(),
                shard_count: u32::from(inp.u8()),
                parity_index: u32::from(inp.u8()),
                data_shards: u32::from(inp.u8()),
                payload: inp.bytes(2_100),
                shard_lengths: ShardLengths::default(),
            };
            out.resize(p.encoded_len(), 0);
            if p.encode(&mut out).is_err() {
                return;
            }
        }
        2 => {
            let timestamp_us = inp.u64();
            let payload = inp.bytes(1_000);
            out.resize(payload.len() + 32, 0);
            let Ok(n) = (AudioPacketRef {
                timestamp_us,
                payload,
            })
            .encode(&mut out) else {
                return;
            };
            out.truncate(n);
        }
        3 => {
            let fb = proto::TransportFeedback {
                highest_packet_id: inp.id(),
                ack_delay_us: inp.u32(),
                received_packets: inp.u32(),
                lost_packets: inp.u32(),
                received_bytes: inp.u64(),
                interval_us: inp.u32(),
                fec_recovered: inp.u32(),
                jitter_us: inp.u32(),
                frame_losses: (0..inp.u8() % 40).map(|_| inp.u32()).collect(),
                acked_reliable: (0..inp.u8()).map(|_| inp.id()).collect(),
            };
            out = control(Ctl::Feedback(fb), 0);
        }
        4 => {
            let ids = (0..inp.u8() % 80).map(|_| inp.id()).collect();
            out = control(Ctl::Nack(proto::Nack { packet_ids: ids }), 0);
        }
        5 => {
            let seq = inp.id();
            let c = match inp.u8() % 13 {
                0 => Ctl::Hello(proto::Hello {
                    protocol_version: 1,
                    supported_codecs: vec![i32::from(inp.u8())],
                    ..proto::Hello::default()
                }),
                1 => Ctl::HelloAck(proto::HelloAck {
                    accepted: inp.u8() & 1 == 1,
                    ..proto::HelloAck::default()
                }),
                2 => Ctl::Rfi(proto::ReferenceInvalidation {
                    last_valid_frame_id: inp.id(),
                }),
                3 => Ctl::Ping(proto::Ping {
                    timestamp_us: inp.u64(),
                }),
                4 => Ctl::FileHeader(proto::FileHeader {
                    file_id: inp.id(),
                    filename: String::from_utf8_lossy(inp.bytes(300)).into_owned(),
                    file_size: inp.id(),
                    checksum_sha256: String::from_utf8_lossy(inp.bytes(80)).into_owned(),
                    chunk_size: inp.u32(),
                    total_chunks: inp.u32(),
                }),
                5 => Ctl::FileStatus(proto::FileStatus {
                    file_id: inp.id(),
                    status: i32::from(inp.u8() % 6),
                    message: String::from_utf8_lossy(inp.bytes(600)).into_owned(),
                }),
                6 => Ctl::Clipboard(proto::ClipboardMessage {
                    text: String::from_utf8_lossy(inp.bytes(1_100)).into_owned(),
                }),
                8 => Ctl::Rekey(proto::Rekey {
                    generation: inp.id(),
                    public_key: inp.bytes(40).to_vec(),
                }),
                9 => Ctl::RekeyAck(proto::RekeyAck {
                    generation: inp.id(),
                    public_key: inp.bytes(40).to_vec(),
                }),
                10 => Ctl::PathChallenge(proto::PathChallenge { data: inp.u64() }),
                11 => Ctl::PathResponse(proto::PathResponse { data: inp.u64() }),
                _ => Ctl::Goodbye(proto::Goodbye {
                    code: 0,
                    reason: String::new(),
                }),
            };
            out = control(c, seq);
        }
        6 => {
            let file_id = inp.id();
            let chunk_index = inp.u32();
            let reliable_seq = inp.id();
            FileChunkRef {
                file_id,
                chunk_index,
                payload: inp.bytes(1_000),
                reliable_seq,
            }
            .append_to(&mut out);
        }
        7 => out = inp.bytes(1_100).to_vec(),
        8 => {
            r.jump = match inp.u8() % 3 {
                0 => r.jump.saturating_add(u64::from(inp.u16())),
                1 => inp.id(),
                _ => 0,
            };
            return;
        }
        9 => {
            let i = usize::from(inp.u8());
            if let Some((h, d)) = r.captured.get(i % r.captured.len().max(1)).cloned() {
                let mut d = d;
                // Replayed from the client's address or from another one.
                let client_from = if inp.u8() & 1 == 1 { r.alt } else { r.ca };
                let (s, from) = if h {
                    (&mut r.host, client_from)
                } else {
                    (&mut r.client, r.ha)
                };
                s.handle_datagram(r.now, from, &mut d);
            }
            return;
        }
        10 => {
            let ms = u64::from(inp.u16() % 2_000);
            r.advance(Duration::from_millis(ms));
            r.pump(usize::from(inp.u8()));
            return;
        }
        11 => {
            r.pump(usize::from(inp.u8()) + 1);
            return;
        }
        12 => {
            // NAT rebinding: the client's datagrams come from the other address from now on.
            r.roamed = !r.roamed;
            return;
        }
        _ => {
            let len = usize::from(inp.u16()) % r.frame.len() + 1;
            match inp.u8() % 4 {
                0 => {
                    let frame = r.frame[..len].to_vec();
                    let _ = r.host.send_frame(
                        r.now,
                        &frame,
                        wavry_rift::session::FrameMeta::default(),
                        Duration::from_millis(16),
                    );
                }
                1 => {
                    let _ = r.client.send_control(
                        r.now,
                        Ctl::Ping(proto::Ping {
                            timestamp_us: inp.u64(),
                        }),
                    );
                }
                2 => {
                    let _ = r.host.send_file(r.now, "f.bin", inp.id(), [7; 32]);
                }
                _ => {
                    let _ = r.client.send_audio(r.now, 0, &r.frame[..len.min(900)]);
                }
            }
            return;
        }
    }
    r.inject(to_host, &out);
}

fuzz_target!(|data: &[u8]| {
    let Some(mut r) = Rig::new() else {
        return;
    };
    let mut inp = Input(data);
    let mut ops = 0;
    while !inp.done() && ops < 512 {
        step(&mut r, &mut inp);
        r.drain();
        assert!(r.host.unacked() <= MAX_UNACKED);
        assert!(r.client.unacked() <= MAX_UNACKED);
        ops += 1;
    }
    r.advance(Duration::from_secs(1));
    r.pump(256);
});
