//! What a session reports to the application.

use crate::{
    identity::WavryId,
    proto,
    transfer::{FileError, FileOffer},
};

/// Metadata the sender attaches to a video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// Capture timestamp on the sender's clock, µs.
    pub timestamp_us: u64,
    /// Keyframe (decodable on its own).
    pub keyframe: bool,
    /// Capture time, µs.
    pub capture_us: u32,
    /// Encode time, µs.
    pub encode_us: u32,
}

/// A complete video frame, delivered in frame order before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame number.
    pub frame_id: u64,
    /// Sender metadata.
    pub meta: FrameMeta,
    /// Encoded bytes (give the buffer back with `Session::recycle`).
    pub data: Vec<u8>,
    /// Chunks rebuilt from parity for this frame.
    pub fec_recovered: u32,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it.
    Local,
    /// The peer said goodbye.
    Remote(String),
    /// Nothing authenticated arrived for the idle timeout.
    IdleTimeout,
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The handshake failed (bad proof, refused identity, …).
    HandshakeFailed(String),
    /// The host refused the Hello (e.g. busy with another client).
    Refused,
    /// The peer left [`crate::session::MAX_UNACKED`] reliable messages unacknowledged.
    ReliableQueueFull,
    /// The relay refused this client's lease (spec RELAY §1 reason).
    RelayRejected(crate::wire::RejectReason),
    /// The relay never answered this client's lease presentation.
    RelayUnreachable,
}

/// Events, in the order they happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Keys are established and Hello/HelloAck completed.
    Connected {
        /// Authenticated peer identity.
        peer: WavryId,
        /// The negotiated parameters (host's answer).
        params: Box<proto::HelloAck>,
    },
    /// A complete frame.
    Frame(Frame),
    /// A frame missed its deadline and was dropped (a keyframe request went out).
    FrameDropped {
        /// The dropped frame.
        frame_id: u64,
    },
    /// An input event from the peer.
    Input(proto::InputMessage),
    /// An Opus packet.
    Audio {
        /// Capture timestamp, µs.
        timestamp_us: u64,
        /// The packet.
        data: Vec<u8>,
    },
    /// Any other control message for the application (clipboard, monitors, …).
    Control(proto::ControlMessage),
    /// DELTA changed its target: reconfigure the encoder.
    TargetBitrate {
        /// Bits per second.
        bps: u64,
        /// Frames per second.
        fps: u32,
    },
    /// The peer lost a frame and needs a keyframe (or a frame referencing `last_valid`).
    KeyframeRequested {
        /// Last frame the peer decoded.
        last_valid: u64,
    },
    /// The peer offers a file: answer with `accept_file` or `refuse_file`.
    FileOffered(FileOffer),
    /// The peer accepted (or asked to restart) an outgoing file: write its bytes from
    /// `offset` with `write_file`.
    FileAccepted {
        /// The transfer.
        file_id: u64,
        /// Where the receiver wants data from.
        offset: u64,
    },
    /// An outgoing file has room for more bytes after a short `write_file`.
    FileWritable {
        /// The transfer.
        file_id: u64,
    },
    /// The next bytes of an incoming file, in order (give the buffer back with
    /// `recycle_file_data`).
    FileData {
        /// The transfer.
        file_id: u64,
        /// Byte offset of `data` in the file.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A transfer ended; for an incoming file `Ok` means every byte arrived and the SHA-256
    /// matched.
    FileDone {
        /// The transfer.
        file_id: u64,
        /// True for a file this side sent.
        sending: bool,
        /// How it ended.
        result: Result<(), FileError>,
    },
    /// Path statistics for the last period (RTT, jitter, loss, FEC, NACK, bitrates).
    Stats(super::PathStats),
    /// The peer's clipboard changed to this text.
    Clipboard(String),
    /// The session ended.
    Closed(CloseReason),
}
