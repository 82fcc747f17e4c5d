//! What the kernel drops before the shards see it (`--kernel-filter`):
//! - `bound-peers` (default; Linux, root or CAP_BPF, eBPF): everything `prefix` drops, and
//!   every FORWARD whose (session id, source address) pair no peer is bound to. The shards
//!   keep the kernel's table in step with their cores' bindings ([`BindingSink`]), before
//!   the LEASE_ACK that lets a peer send goes out. A flood of FORWARDs that copy a live
//!   session id from other sources then costs the relay's threads nothing.
//! - `prefix` (classic BPF): datagrams shorter than the header or without the relay magic and
//!   version.
//! - `off`: the shards check everything.
//!
//! Where `bound-peers` cannot load, the relay says why and uses `prefix`. Should the table
//! ever refuse an update (it is sized for `--max-sessions`, so it should not), the relay puts
//! `prefix` back on every socket rather than drop a bound peer's data, and says so. The core
//! checks every datagram whatever the kernel let through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::core::BindingEvent;

/// Receives a shard's binding changes; called by the shard before its replies go out.
pub trait BindingSink: Sync {
    /// Applies the changes, oldest first.
    fn apply(&self, events: &mut dyn Iterator<Item = BindingEvent>);
}

/// What the kernel drops before the shards see it (`--kernel-filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "bin", derive(clap::ValueEnum))]
pub enum FilterMode {
    /// eBPF: the prefix checks, and FORWARDs from an address no peer of their session is
    /// bound to. Needs root or CAP_BPF; else one line says why and `prefix` is used.
    BoundPeers,
    /// Classic BPF: datagrams shorter than the relay header or without its magic and version.
    Prefix,
    /// Nothing: the forwarding threads check every datagram.
    Off,
}

impl FilterMode {
    /// The flag's spelling (/health, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BoundPeers => "bound-peers",
            Self::Prefix => "prefix",
            Self::Off => "off",
        }
    }
}

/// The filter in force, for /health and /metrics.
#[derive(Debug)]
pub struct FilterState {
    /// The filter loaded at start.
    pub mode: FilterMode,
    /// The bound-peers table is in force (false after a fall back to `prefix`).
    pub bound_peers_active: AtomicBool,
    /// Pairs in the bound-peers table.
    pub pairs: AtomicU64,
}

impl FilterState {
    /// The state of a relay whose filter is `mode`.
    pub fn new(mode: FilterMode) -> Self {
        Self {
            mode,
            bound_peers_active: AtomicBool::new(mode == FilterMode::BoundPeers),
            pairs: AtomicU64::new(0),
        }
    }

    /// The filter now in force.
    pub fn current(&self) -> FilterMode {
        if self.mode == FilterMode::BoundPeers && !self.bound_peers_active.load(Ordering::Relaxed) {
            FilterMode::Prefix
        } else {
            self.mode
        }
    }
}

#[cfg(target_os = "linux")]
pub use linux::{BoundPeersFilter, attach_prefix};

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex, PoisonError};

    use wavry_net::bound_peers::{BoundPeers, BoundPeersConfig, BoundPeersError};
    use wavry_rift::wire::{RELAY_MAGIC, RELAY_VERSION, RelayHeader, RelayType};

    use super::{BindingSink, FilterState};
    use crate::core::BindingEvent;

    /// Attaches the classic-BPF prefix filter (magic, version, header length) to `socket`.
    pub fn attach_prefix(socket: &impl AsFd) -> std::io::Result<()> {
        wavry_net::filter::require_payload_prefix(
            socket,
            &[RELAY_MAGIC, RELAY_VERSION],
            RelayHeader::LEN as u32,
        )
    }

    /// The bound-peers table shared by every shard, and the sockets it filters.
    pub struct BoundPeersFilter {
        inner: Mutex<Inner>,
        state: Arc<FilterState>,
    }

    struct Inner {
        peers: BoundPeers,
        sockets: Vec<OwnedFd>,
        /// Fell back to the prefix filter; updates stop.
        degraded: bool,
    }

    impl std::fmt::Debug for BoundPeersFilter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("BoundPeersFilter")
                .field("state", &self.state)
                .finish_non_exhaustive()
        }
    }

    impl BoundPeersFilter {
        /// Loads the program with a table of `max_pairs` and attaches it to every socket.
        pub fn attach(
            sockets: &[&dyn AsFd],
            max_pairs: u32,
            state: Arc<FilterState>,
        ) -> Result<Self, BoundPeersError> {
            let peers = BoundPeers::load(&BoundPeersConfig {
                prefix: [RELAY_MAGIC, RELAY_VERSION],
                min_len: RelayHeader::LEN as u32,
                guard_offset: 2,
                guard_value: RelayType::Forward as u8,
                id_offset: 4,
                max_pairs,
            })?;
            let mut owned = Vec::with_capacity(sockets.len());
            for s in sockets {
                peers.attach(s)?;
                owned.push(
                    s.as_fd()
                        .try_clone_to_owned()
                        .map_err(|e| BoundPeersError::Map {
                            what: "duplicating a socket",
                            why: e.to_string(),
                        })?,
                );
            }
            Ok(Self {
                inner: Mutex::new(Inner {
                    peers,
                    sockets: owned,
                    degraded: false,
                }),
                state,
            })
        }
    }

    impl BindingSink for BoundPeersFilter {
        fn apply(&self, events: &mut dyn Iterator<Item = BindingEvent>) {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            for ev in events {
                if inner.degraded {
                    continue;
                }
                let r = match ev {
                    BindingEvent::Bound(sid, a) => inner.peers.insert(&sid, a),
                    BindingEvent::Unbound(sid, a) => inner.peers.remove(&sid, a),
                };
                if let Err(e) = r {
                    tracing::error!(
                        error = %e,
                        "the bound-peers table refused an update; the kernel filter falls back to the prefix filter"
                    );
                    for s in &inner.sockets {
                        if let Err(e) = attach_prefix(s) {
                            tracing::error!(error = %e, "cannot attach the prefix filter either; removing the kernel filter");
                            let _ = wavry_net::filter::detach(s);
                        }
                    }
                    inner.degraded = true;
                    self.state
                        .bound_peers_active
                        .store(false, Ordering::Relaxed);
                }
            }
            self.state
                .pairs
                .store(inner.peers.pairs() as u64, Ordering::Relaxed);
        }
    }
}
