//! The sans-IO RIFT session: one peer-to-peer association, driven by the caller.
//!
//! ```text
//!   handle_datagram(now, from, buf)   a datagram arrived (decoded, authenticated, reassembled)
//!   poll_transmit(now, buf, max)      fill `buf` with ready datagrams; None = nothing now
//!   poll_event()                      frames, input, control, stats for the application
//!   poll_timeout() / handle_timeout   the one timer: call handle_timeout(now) when it fires
//! ```
//! Call `poll_transmit` until it returns `None` after every `handle_*` call and after every
//! application call (`send_frame`, `send_input`, …); then arm a timer for `poll_timeout()`.
//! No method blocks, reads a clock, or touches a socket. Buffers are reused: steady-state
//! packets allocate nothing (see `tests/no_alloc_session.rs`).
//!
//! Concerns live in submodules: `establish` (handshake, hello), `send` (queues, video
//! packetisation and FEC, pacing, history, reliable control), `recv` (authentication,
//! reassembly, FEC repair, deadline buffer, feedback and NACK), `stats`.

mod config;
mod drive;
mod endpoint;
mod establish;
mod event;
mod files;
mod path;
mod pool;
mod recv;
mod rekey;
mod relayed;
mod send;
mod stats;

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

pub use config::{HostParams, RelayPath, Role, SessionConfig};
pub use endpoint::{Endpoint, EndpointConfig, EndpointStats, SessionHandle};
pub use event::{CloseReason, Event, Frame, FrameMeta};
pub use files::FileProgress;
pub use path::MAX_CHALLENGES;
pub use recv::{MAX_HELD_PARITY, frame_budget};
pub use send::MAX_UNACKED;
pub use stats::{PathStats, SessionStats};

use crate::{
    cc::Delta,
    crypto::{Handshake, SecureChannel},
    proto,
    wire::RelayHeader,
};

/// Explicit Congestion Notification codepoint of a datagram (as quinn's `EcnCodepoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecn {
    /// ECT(0).
    Ect0,
    /// ECT(1).
    Ect1,
    /// Congestion experienced.
    Ce,
}

/// Datagrams written into the caller's buffer by [`Session::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send.
    pub destination: SocketAddr,
    /// Local IP to send from (the address the peer's datagrams arrived at), so a multi-homed
    /// host answers from the right address; `None`: the socket's choice.
    pub src_ip: Option<IpAddr>,
    /// ECN codepoint to mark the datagrams with; `None`: not ECN-capable.
    pub ecn: Option<Ecn>,
    /// Total bytes written at the start of the buffer.
    pub len: usize,
    /// When several datagrams were written back to back: the size of each (the last may be
    /// shorter). Send with GSO (UDP_SEGMENT) or split at this size.
    pub segment_size: Option<usize>,
}

/// Why a call from the application was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session is not established yet (or already closed).
    #[error("session is not connected")]
    NotConnected,
    /// The frame is empty or larger than the configured maximum.
    #[error("frame size {0} is out of range")]
    FrameSize(usize),
    /// A control or input message does not fit one datagram (they are not fragmented; send
    /// large data as a file transfer).
    #[error("message of {len} bytes exceeds the {max}-byte datagram budget")]
    MessageTooLarge {
        /// Encoded size.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The message could not be encoded.
    #[error("message encoding failed: {0}")]
    Encode(String),
    /// No transfer has this id (or it is not in a state that allows the call).
    #[error("no transfer {0:#x} in a state that allows this")]
    UnknownTransfer(u64),
    /// The per-direction transfer limit is reached.
    #[error("too many transfers at once")]
    TooManyTransfers,
    /// A file offer or resume point is unusable.
    #[error("invalid file transfer: {0}")]
    InvalidFile(&'static str),
    /// The handle names a session that is closed and gone (its slot may hold a newer one).
    #[error("no such session: the handle is stale")]
    StaleHandle,
    /// Handshake setup failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The relay lease is unusable (nil session, relay id or token out of range).
    #[error(transparent)]
    Relay(#[from] crate::relay_client::RelayClientError),
    /// The reliable queue holds its maximum of unacknowledged messages; the session closes
    /// ([`CloseReason::ReliableQueueFull`]).
    #[error("reliable queue full: the peer does not acknowledge")]
    ReliableQueueFull,
}

/// Where the session is in its life.
#[derive(Debug)]
enum Phase {
    Handshaking(Box<Handshake>),
    /// Keys established, Hello/HelloAck in flight.
    Securing,
    Connected,
    Closed,
}

/// One RIFT session (client or host side).
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    remote: SocketAddr,
    phase: Phase,
    channel: Option<SecureChannel>,
    alias: u32,
    hs_id: u128,
    est: establish::Establish,
    send: send::Sender,
    recv: recv::Receiver,
    files: files::Files,
    cc: Delta,
    events: std::collections::VecDeque<Event>,
    stats: SessionStats,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    created: Instant,
    /// Last (bitrate / 10 kbit/s, fps) reported to the application.
    last_target: Option<(u64, u32)>,
    /// The latest `now` any entry point was given (for `poll_timeout`, which takes none).
    clock: Instant,
    /// The current statistics period and when it ends.
    period: stats::Period,
    next_stats: Option<Instant>,
    /// Randomness (ids in messages): the OS, or seeded for reproducible simulations.
    rng: crate::rng::Rng,
    /// Local IP the peer's datagrams arrive at (set by an endpoint), used as the source.
    local_ip: Option<IpAddr>,
    /// Rekeying with forward secrecy.
    rekey: rekey::RekeyState,
    /// Roaming: the path check in progress.
    path: path::PathState,
    /// A client session through a relay: its own lease presentation (see `relayed`).
    relay_client: Option<Box<crate::relay_client::RelayClient>>,
}

impl Session {
    /// The peer's address (learned from the handshake on the host side).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The session alias used in transport headers.
    pub fn alias(&self) -> u32 {
        self.alias
    }

    /// The handshake id (initiator-chosen).
    pub fn handshake_id(&self) -> u128 {
        self.hs_id
    }

    /// True once Hello/HelloAck completed.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected)
    }

    /// True after close or failure.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The peer's authenticated identity, once known.
    pub fn peer(&self) -> Option<crate::identity::WavryId> {
        self.channel.as_ref().map(SecureChannel::peer)
    }

    /// Counters for diagnostics and tests.
    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats.clone();
        s.fec_recovered = self.recv.recovered_total();
        s.frames_delivered = self.recv.frames_delivered;
        s.frames_dropped = self.recv.frames_dropped;
        s.media_expired = self.send.media_expired;
        s.frame_budget_refused = self.recv.frame_budget_refused;
        s.packet_id_jumps = self.recv.packet_id_jumps;
        s.nacks_ignored = self.send.nacks_ignored;
        s.feedback_clamped = self.send.feedback_clamped;
        s
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Returns a frame buffer from an [`Event::Frame`] so its memory is reused.
    pub fn recycle(&mut self, frame: Frame) {
        self.recv.recycle(frame.data);
    }

    /// Current DELTA target bitrate, bit/s.
    pub fn target_bitrate(&self) -> u64 {
        self.cc.target_bps()
    }

    /// Smoothed RTT, once measured.
    pub fn rtt(&self) -> Option<std::time::Duration> {
        self.send.srtt()
    }

    /// Closes the session: a Goodbye goes out (best effort) and no more data is accepted.
    pub fn close(&mut self, _now: Instant, reason: &str) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if self.channel.is_some() {
            let msg = proto::Message {
                content: Some(proto::message::Content::Control(proto::ControlMessage {
                    content: Some(proto::control_message::Content::Goodbye(proto::Goodbye {
                        code: 0,
                        reason: reason.chars().take(128).collect(),
                    })),
                })),
                reliable_seq: 0,
            };
            let _ = self.send.queue_message(send::Class::Control, &msg, None);
        }
        self.finish(CloseReason::Local);
    }

    fn finish(&mut self, reason: CloseReason) {
        if !matches!(self.phase, Phase::Closed) {
            self.end_all_transfers();
            self.phase = Phase::Closed;
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Bytes in front of the RIFT header (relay header when relayed).
    fn prefix_len(&self) -> usize {
        if self.cfg.relay.is_some() {
            RelayHeader::LEN
        } else {
            0
        }
    }
}
