//! Wire layouts, one file each: RIFT physical headers, the handshake extension (padding,
//! cookies), the relay header and its control
//! payloads, the header checksum. Decoders borrow from the datagram and return typed errors;
//! encoders write into caller buffers. No allocation anywhere in this module, except in
//! [`stun`] (STUN Binding for reflexive addresses, a few messages per session, off the media
//! path), which returns owned messages.

mod checksum;
mod cookie;
mod error;
mod header;
mod relay;
pub mod stun;

pub use checksum::crc16_kermit;
pub use cookie::{
    COOKIE_REPLY_LEN, Cookie, FirstMessage, HandshakeKind, MSG1_MIN_LEN, NOISE_MSG1_LEN,
    decode_cookie_reply, encode_cookie_reply,
};
pub use error::WireError;
pub use header::{HandshakeHeader, Header, MAGIC, TransportHeader, VERSION};
pub use relay::{
    BINDING_DOMAIN, BINDING_MESSAGE_MAX, LeaseAck, LeasePresent, MAX_LEASE_TOKEN,
    MAX_RELAY_DATAGRAM, MAX_RELAY_ID, PeerRole, PresentBinding, RELAY_MAGIC, RELAY_VERSION,
    RejectReason, RelayHeader, RelayType, binding_message,
};
