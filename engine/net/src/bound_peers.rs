//! The bound-peers socket filter (eBPF, Linux): the kernel drops a forwarder's data datagram
//! unless its (16-byte session id, source address and port) pair is one the forwarder has
//! bound, before the datagram is queued or copied out. Datagrams that fail the protocol's
//! leading bytes or minimum length are dropped as by [`crate::filter::require_payload_prefix`];
//! control datagrams (whatever does not carry the data type byte) pass to user space, which
//! verifies them.
//!
//! A flood of data datagrams that copy a live session id from spoofed or foreign sources then
//! costs the forwarder's threads nothing: the sender's own system call is what runs the
//! filter. The program is bpf/bound_peers.bpf.c (built by build.rs with clang); it is loaded
//! with `aya`, attached with `SO_ATTACH_BPF` (replacing a classic filter), and kept in step
//! with the forwarder's bindings through [`BoundPeers::insert`] / [`BoundPeers::remove`]. The
//! kernel counts its drops in the socket's drop count ([`crate::filter::socket_drops`]).

use std::net::SocketAddr;

/// What the program checks, in payload offsets (the UDP header is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundPeersConfig {
    /// The first two payload bytes every datagram must start with.
    pub prefix: [u8; 2],
    /// Shortest payload kept.
    pub min_len: u32,
    /// Payload byte that marks a data datagram ...
    pub guard_offset: u8,
    /// ... when it has this value; only those are checked against the bound pairs.
    pub guard_value: u8,
    /// Payload offset of the 16-byte session id of a data datagram.
    pub id_offset: u16,
    /// Most (id, address) pairs bound at once; inserts beyond fail with [`BoundPeersError::Map`].
    pub max_pairs: u32,
}

/// Why the filter could not be loaded, attached or updated.
#[derive(Debug, thiserror::Error)]
pub enum BoundPeersError {
    /// Not Linux, or built without clang (the message names the packages).
    #[error("the bound-peers filter is unavailable: {0}")]
    Unavailable(&'static str),
    /// Loading eBPF needs root or CAP_BPF.
    #[error("loading the bound-peers filter needs root or CAP_BPF: {0}")]
    NoPrivilege(String),
    /// The kernel refused the program or a map operation.
    #[error("bound-peers filter: {what}: {why}")]
    Map {
        /// What was being done.
        what: &'static str,
        /// The kernel's or loader's answer.
        why: String,
    },
}

/// Bytes of a key: id, IPv6 (IPv4 mapped) address, port in network order, two pad bytes; the
/// layout of `struct peer_key` in the program.
pub const KEY_LEN: usize = 36;

/// The program's key for `(id, addr)`. IPv4 and IPv4-mapped IPv6 addresses give the same key,
/// as the program sees an IPv4 header either way.
pub fn key(id: &[u8; 16], addr: SocketAddr) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..16].copy_from_slice(id);
    let ip = match addr {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    };
    k[16..32].copy_from_slice(&ip.octets());
    k[32..34].copy_from_slice(&addr.port().to_be_bytes());
    k
}

#[cfg(all(target_os = "linux", not(wavry_no_bpf)))]
pub use imp::BoundPeers;

#[cfg(all(target_os = "linux", not(wavry_no_bpf)))]
mod imp {
    use std::net::SocketAddr;
    use std::os::fd::AsFd;

    use aya::maps::{Array, HashMap, MapData, MapError};
    use aya::programs::SocketFilter;
    use aya::{Ebpf, EbpfLoader};

    use super::{BoundPeersConfig, BoundPeersError, KEY_LEN, key};

    /// `BPF_NOEXIST` (uapi/linux/bpf.h): insert only a key that is not there yet.
    const BPF_NOEXIST: u64 = 1;

    /// The compiled object, aligned as aya's ELF parser wants it.
    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bound_peers.o"));

    /// The loaded program and its table of bound pairs. Dropping it leaves the filter on the
    /// sockets it was attached to (they hold the program), with the table as it was.
    pub struct BoundPeers {
        ebpf: Ebpf,
        peers: HashMap<MapData, [u8; KEY_LEN], u8>,
        pairs: usize,
    }

    impl std::fmt::Debug for BoundPeers {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("BoundPeers")
                .field("pairs", &self.pairs)
                .finish_non_exhaustive()
        }
    }

    fn refused(what: &'static str, e: &dyn std::error::Error) -> BoundPeersError {
        let why = crate::error_chain(e);
        if why.contains("Operation not permitted") || why.contains("EPERM") {
            BoundPeersError::NoPrivilege(why)
        } else {
            BoundPeersError::Map { what, why }
        }
    }

    impl BoundPeers {
        /// Loads and verifies the program with an empty table.
        pub fn load(cfg: &BoundPeersConfig) -> Result<Self, BoundPeersError> {
            let mut ebpf = EbpfLoader::new()
                .map_max_entries("peers", cfg.max_pairs.max(1))
                .load(OBJECT)
                .map_err(|e| refused("loading the object", &e))?;
            {
                let mut config: Array<_, [u8; 12]> = Array::try_from(
                    ebpf.map_mut("config")
                        .ok_or_else(|| missing("the config map"))?,
                )
                .map_err(|e| refused("the config map", &e))?;
                let mut c = [0u8; 12];
                c[..2].copy_from_slice(&cfg.prefix);
                c[2] = cfg.guard_offset;
                c[3] = cfg.guard_value;
                c[4..8].copy_from_slice(&cfg.min_len.to_ne_bytes());
                c[8..12].copy_from_slice(&u32::from(cfg.id_offset).to_ne_bytes());
                config
                    .set(0, c, 0)
                    .map_err(|e| refused("writing the config", &e))?;
            }
            let prog: &mut SocketFilter = ebpf
                .program_mut("bound_peers")
                .ok_or_else(|| missing("the program"))?
                .try_into()
                .map_err(|e| refused("the program type", &e))?;
            prog.load()
                .map_err(|e| refused("verifying the program", &e))?;
            let peers = HashMap::try_from(
                ebpf.take_map("peers")
                    .ok_or_else(|| missing("the peers map"))?,
            )
            .map_err(|e| refused("the peers map", &e))?;
            Ok(Self {
                ebpf,
                peers,
                pairs: 0,
            })
        }

        /// Attaches the filter to `socket`, replacing any filter it had.
        pub fn attach(&self, socket: &impl AsFd) -> Result<(), BoundPeersError> {
            let prog: &SocketFilter = self
                .ebpf
                .program("bound_peers")
                .ok_or_else(|| missing("the program"))?
                .try_into()
                .map_err(|e| refused("the program type", &e))?;
            prog.attach(socket.as_fd())
                .map_err(|e| refused("attaching to the socket", &e))
        }

        /// Lets `addr` send data datagrams of session `id` (idempotent).
        pub fn insert(&mut self, id: &[u8; 16], addr: SocketAddr) -> Result<(), BoundPeersError> {
            // One system call: BPF_NOEXIST says whether the pair was new (EEXIST if not).
            match self.peers.insert(key(id, addr), 1, BPF_NOEXIST) {
                Ok(()) => {
                    self.pairs += 1;
                    Ok(())
                }
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
                {
                    Ok(())
                }
                Err(e) => Err(refused("adding a pair", &e)),
            }
        }

        /// Stops `addr` sending data datagrams of session `id` (absent pairs are fine).
        pub fn remove(&mut self, id: &[u8; 16], addr: SocketAddr) -> Result<(), BoundPeersError> {
            match self.peers.remove(&key(id, addr)) {
                Ok(()) => {
                    self.pairs = self.pairs.saturating_sub(1);
                    Ok(())
                }
                Err(MapError::KeyNotFound) => Ok(()),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                Err(e) => Err(refused("removing a pair", &e)),
            }
        }

        /// Pairs in the table.
        pub fn pairs(&self) -> usize {
            self.pairs
        }
    }

    fn missing(what: &'static str) -> BoundPeersError {
        BoundPeersError::Map {
            what,
            why: "missing from the object".into(),
        }
    }
}

#[cfg(not(all(target_os = "linux", not(wavry_no_bpf))))]
mod stub {
    use std::net::SocketAddr;

    use super::{BoundPeersConfig, BoundPeersError};

    /// Stand-in where eBPF is unavailable: loading always fails and says why.
    #[derive(Debug)]
    pub struct BoundPeers(());

    const WHY: &str = if cfg!(target_os = "linux") {
        "wavry-net was built without clang and libbpf-dev (Debian: apt install clang libbpf-dev)"
    } else {
        "eBPF socket filters need Linux"
    };

    impl BoundPeers {
        /// Always fails: eBPF is unavailable in this build.
        pub fn load(_cfg: &BoundPeersConfig) -> Result<Self, BoundPeersError> {
            Err(BoundPeersError::Unavailable(WHY))
        }

        /// Unreachable in practice (no value exists).
        pub fn attach<T>(&self, _socket: &T) -> Result<(), BoundPeersError> {
            Err(BoundPeersError::Unavailable(WHY))
        }

        /// Unreachable in practice (no value exists).
        pub fn insert(&mut self, _id: &[u8; 16], _addr: SocketAddr) -> Result<(), BoundPeersError> {
            Err(BoundPeersError::Unavailable(WHY))
        }

        /// Unreachable in practice (no value exists).
        pub fn remove(&mut self, _id: &[u8; 16], _addr: SocketAddr) -> Result<(), BoundPeersError> {
            Err(BoundPeersError::Unavailable(WHY))
        }

        /// Always 0.
        pub fn pairs(&self) -> usize {
            0
        }
    }
}

#[cfg(not(all(target_os = "linux", not(wavry_no_bpf))))]
pub use stub::BoundPeers;
