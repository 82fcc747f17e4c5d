//! Session configuration.

use std::time::Duration;

use crate::{cc::DeltaConfig, crypto::PeerPolicy, proto};

/// Which side of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Initiates the handshake and sends Hello; receives video.
    Client,
    /// Responds; sends HelloAck and video.
    Host,
}

/// Relay mode: every datagram carries a 20-byte FORWARD relay header for this relay session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPath {
    /// The relay session id (from the lease); never nil.
    pub session_id: [u8; 16],
}

/// What a host offers in HelloAck (spec RIFT §4).
#[derive(Debug, Clone)]
pub struct HostParams {
    /// Codecs the host can encode, best first.
    pub codecs: Vec<proto::Codec>,
    /// Default stream resolution.
    pub resolution: (u32, u32),
    /// Frame rate.
    pub fps: u32,
    /// Starting bitrate, kbit/s.
    pub initial_bitrate_kbps: u32,
    /// Keyframe interval, ms.
    pub keyframe_interval_ms: u32,
}

impl Default for HostParams {
    fn default() -> Self {
        Self {
            codecs: vec![proto::Codec::H264],
            resolution: (1280, 720),
            fps: 60,
            initial_bitrate_kbps: 20_000,
            keyframe_interval_ms: 1000,
        }
    }
}

/// Everything a session needs besides its identity key.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Client or host.
    pub role: Role,
    /// Which peer identities are accepted.
    pub policy: PeerPolicy,
    /// Largest datagram on the path, relay header included (default 1200).
    pub max_datagram: usize,
    /// Relay mode of this session's path: every datagram carries a FORWARD header. Set by
    /// `Session::client_via_relay` for a client; a host `Endpoint` ignores its own value and
    /// sets it per session from the relay path the handshake came in on.
    pub relay: Option<RelayPath>,
    /// First handshake retransmission timeout (doubles each retry).
    pub handshake_rto: Duration,
    /// Give up the handshake after this long.
    pub handshake_timeout: Duration,
    /// Close after this long without any authenticated datagram.
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending.
    pub keepalive: Duration,
    /// Slack added to a frame's interval for its playout deadline.
    pub playout_slack: Duration,
    /// Largest frame accepted or sent.
    pub max_frame: usize,
    /// Pacer burst, in datagrams of `max_datagram`: how many may leave back to back (and so
    /// share one GSO send). Default 4; a driver on a fast path may raise it to its GSO batch.
    pub pacer_burst: usize,
    /// Congestion control tunables (sender side).
    pub cc: DeltaConfig,
    /// Host offer (host side).
    pub host: HostParams,
    /// Client's Hello (client side).
    pub hello: proto::Hello,
    /// Host side: answer every Hello with `HelloAck{accepted: false}` (the host is busy).
    pub busy: bool,
    /// How often [`super::Event::Stats`] reports the path (zero: never).
    pub stats_interval: Duration,
    /// File transfer and clipboard limits and bitrate share.
    pub files: crate::transfer::TransferConfig,
    /// Seed for every random number (handshake ids, ephemeral keys, cookie secrets, ids in
    /// messages): `None` (default) uses the OS generator; tests and netsim runs set it so a
    /// run is byte-for-byte reproducible. Never set it in production.
    pub rng_seed: Option<u64>,
    /// Host: start a rekey (fresh ephemeral Diffie-Hellman) this long after the last one
    /// (default 2 minutes; zero: only the packet-count trigger).
    pub rekey_interval: std::time::Duration,
    /// Host: start a rekey once this many packets were sealed or opened under one key
    /// (default 2^32).
    pub rekey_after_packets: u64,
    /// How long the previous key generation still opens reordered packets after a rekey,
    /// before it is erased (default 3 s).
    pub rekey_grace: std::time::Duration,
}

impl SessionConfig {
    /// Defaults for `role` with the given identity policy.
    pub fn new(role: Role, policy: PeerPolicy) -> Self {
        Self {
            role,
            policy,
            max_datagram: 1200,
            relay: None,
            handshake_rto: Duration::from_millis(250),
            handshake_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
            keepalive: Duration::from_millis(500),
            playout_slack: Duration::from_millis(15),
            max_frame: 4 << 20,
            pacer_burst: 4,
            cc: DeltaConfig::default(),
            host: HostParams::default(),
            hello: proto::Hello {
                client_name: "wavry".into(),
                platform: 0,
                supported_codecs: vec![proto::Codec::H264 as i32],
                max_resolution: None,
                max_fps: 60,
                input_caps: 0xF,
                protocol_version: 1,
                public_addr: String::new(),
            },
            busy: false,
            stats_interval: Duration::from_secs(1),
            files: crate::transfer::TransferConfig::default(),
            rng_seed: None,
            rekey_interval: Duration::from_secs(120),
            rekey_after_packets: 1 << 32,
            rekey_grace: Duration::from_secs(3),
        }
    }

    /// Chunk payload bytes per video datagram so that data and parity datagrams both fit
    /// `max_datagram` (headers, tag, protobuf framing and shard lengths accounted for).
    pub fn chunk_payload(&self) -> usize {
        let prefix = if self.relay.is_some() { 20 } else { 0 };
        // Worst case around a chunk of C bytes: a parity datagram is 18 (header) + 16 (tag)
        // + C + 52 (VideoChunk framing, rounded up to an even shard) + 29 (FecPacket framing,
        // no length table) = C + 115; 15 bytes spare.
        self.max_datagram.saturating_sub(prefix + 130).max(64)
    }
}
