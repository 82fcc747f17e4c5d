//! Typed decode/encode errors for every wire layout.

/// Why a datagram (or a part of one) was not accepted by a wire decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The datagram is shorter than the layout needs.
    #[error("datagram too short: {len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    /// The first bytes are not the layout's magic.
    #[error("bad magic bytes")]
    BadMagic,
    /// The version field holds a version this implementation does not speak.
    #[error("unsupported version {0}")]
    BadVersion(u16),
    /// The header checksum does not match its bytes.
    #[error("header checksum mismatch: carried {carried:#06x}, computed {computed:#06x}")]
    BadChecksum { carried: u16, computed: u16 },
    /// A transport header carried the reserved alias 0.
    #[error("session alias 0 is reserved for handshake packets")]
    ZeroAlias,
    /// A transport packet id does not fit the 63 bits beside the key phase bit.
    #[error("transport packet id must be below 2^63")]
    PacketIdTooLarge,
    /// A handshake session id does not fit the 96 bits that header detection allows.
    #[error("handshake session id must be below 2^96")]
    SessionIdTooLarge,
    /// A relay header carried an unknown packet type.
    #[error("unknown relay packet type {0:#04x}")]
    UnknownRelayType(u8),
    /// A relay header carried the nil session id.
    #[error("nil relay session id")]
    NilSession,
    /// A relay control payload is malformed (length field, role byte, UTF-8).
    #[error("malformed relay payload: {0}")]
    BadRelayPayload(&'static str),
    /// A handshake message is malformed for Wavry's handshake extension (kind, padding, size).
    #[error("malformed handshake message: {0}")]
    BadHandshake(&'static str),
    /// The caller's output buffer cannot hold the encoded bytes.
    #[error("output buffer too small: {len} bytes, need {need}")]
    BufferTooSmall { len: usize, need: usize },
}
