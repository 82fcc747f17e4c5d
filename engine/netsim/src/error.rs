//! Errors reported by the simulator's configuration calls.

use std::net::SocketAddr;

/// Why a configuration call was refused. Sending never fails: an unknown link is counted
/// (see [`crate::Netsim::unroutable`]) so scenario code can keep its driving loop simple.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NetsimError {
    /// No link was added from `from` to `to`.
    #[error("no link from {from} to {to}")]
    UnknownLink {
        /// Sending address of the missing link.
        from: SocketAddr,
        /// Receiving address of the missing link.
        to: SocketAddr,
    },
    /// A probability field is NaN or outside `[0, 1]`.
    #[error("{field} must be a probability in [0, 1], got {value}")]
    InvalidProbability {
        /// Name of the offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
}
