//! Wire layouts, one file each: RIFT physical headers, the relay header and its control
//! payloads, the header checksum. Decoders borrow from the datagram and return typed errors;
//! encoders write into caller buffers. No allocation anywhere in this module.

mod checksum;
mod error;
mod header;
mod relay;

pub use checksum::crc16_kermit;
pub use error::WireError;
pub use header::{HandshakeHeader, Header, MAGIC, TransportHeader, VERSION};
pub use relay::{
    BINDING_DOMAIN, BINDING_MESSAGE_MAX, LeaseAck, LeasePresent, MAX_LEASE_TOKEN,
    MAX_RELAY_DATAGRAM, MAX_RELAY_ID, PeerRole, PresentBinding, RELAY_MAGIC, RELAY_VERSION,
    RejectReason, RelayHeader, RelayType, binding_message,
};
