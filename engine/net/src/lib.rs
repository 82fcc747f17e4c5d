//! `wavry-net`: batched UDP packet I/O for the RIFT transport.
//!
//! The protocol core (`wavry-rift`) never touches a socket; this crate is the thin layer that
//! moves its datagrams. It has the shape of `quinn-udp`: a batch of [`Transmit`]s goes out (each
//! may carry several equal-size datagrams for GSO), received bytes land in caller-owned buffers
//! described by [`RecvMeta`] (one buffer may hold several datagrams, `stride` apart, from GRO).
//!
//! Two backends implement [`Backend`]:
//! - `uring` (Linux): `io-uring` with a provided-buffer ring, multishot `RecvMsg`, UDP_GRO on
//!   receive and UDP_SEGMENT (GSO) on send, one ring per socket, `SO_REUSEPORT` sharding.
//! - `portable`: `quinn-udp` over a std socket (GSO/GRO where the OS has them); builds anywhere.
//!
//! Both are blocking with a receive timeout (one thread drives one backend; shard with
//! [`bind_sharded`] for more cores). [`Backend::recv`] copies into caller buffers;
//! [`Backend::recv_with`] lends the backend's own buffer instead and saves that copy, which is
//! what a forwarder wants (one thread sending and receiving 54 x 1200 B GSO batches on loopback
//! moved ~20 % more datagrams per second with it here). Nothing on the hot path allocates.
//!
//! [`bind`] picks one from an [`IoMode`] (`--io auto|uring|portable`, `WAVRY_IO`); `auto` probes
//! io_uring and downgrades to portable with one `warn` line saying why.
//!
//! [`xdp`] is the kernel bypass for forwarders (the relay's `--io xdp`): an XDP program that
//! steers one UDP port to AF_XDP sockets, frames parsed and rewritten in place, and sent from
//! the memory they arrived in. On Linux, classic BPF serves forwarders too: [`steer`] picks a
//! `SO_REUSEPORT` shard by payload bytes, and [`filter`] has the kernel drop datagrams that lack
//! the protocol's leading bytes before they are queued or copied out; [`bound_peers`] (eBPF)
//! also drops data datagrams whose (session id, source) pair the forwarder has not bound.
//!
//! The [`driver`] module runs `wavry-rift`'s sans-IO sessions on a backend: a [`HostDriver`]
//! (an `Endpoint` of many sessions) or a [`ClientDriver`] (one `Session`) on its own I/O
//! thread, commanded and observed over channels. `examples/stream.rs` is the end-to-end demo.

#![warn(missing_docs)]

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

pub mod bound_peers;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod cmsg;
mod deliver;
pub mod driver;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod filter;
mod forward;
mod portable;
pub mod priority;
mod queue;
mod select;
pub mod sharded;
mod socket;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod steer;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod uring;
#[allow(unsafe_code)]
pub mod xdp;

pub use driver::{
    ClientDriver, Command, DriverConfig, DriverError, DriverStats, HostDriver, SessionSnapshot,
};
pub use forward::{Forwards, MAX_FORWARDS};
pub use portable::PortableBackend;
pub use priority::{Realtime, Scheduling};
pub use queue::{SEND_CHUNK, SendQueue};
pub use select::{DISABLE_URING_ENV, bind, bind_sharded, probe_uring};
pub use sharded::{ShardedHandle, ShardedHost};
#[cfg(target_os = "linux")]
pub use uring::UringBackend;

/// DSCP Expedited Forwarding (46) in the upper six bits of the TOS / traffic-class byte: `0xB8`.
///
/// RIFT marks every datagram EF so that routers that honour DSCP queue it ahead of bulk traffic.
pub const TOS_DSCP_EF: u8 = 0xB8;

/// Largest UDP payload one send may carry, GSO batches included (IPv4: 65 535 − 20 − 8).
///
/// A GSO transmit must satisfy `contents.len() <= MAX_UDP_PAYLOAD`; with 1 200 B datagrams that
/// is at most 54 segments per send.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Explicit Congestion Notification codepoint (the two low bits of the TOS byte).
///
/// Set per [`Transmit`]; reported per receive in [`RecvMeta::ecn`] where the OS delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ecn {
    /// ECT(1): ECN-capable transport, codepoint 1 (L4S).
    Ect1 = 0b01,
    /// ECT(0): ECN-capable transport, codepoint 0.
    Ect0 = 0b10,
    /// CE: congestion experienced, set by a router.
    Ce = 0b11,
}

impl Ecn {
    /// Reads the ECN bits of a TOS / traffic-class byte; `None` for Not-ECT.
    pub fn from_tos(tos: u8) -> Option<Self> {
        match tos & 0b11 {
            0b01 => Some(Self::Ect1),
            0b10 => Some(Self::Ect0),
            0b11 => Some(Self::Ce),
            _ => None,
        }
    }
}

/// One outgoing send: a single datagram, or several equal-size datagrams for GSO.
///
/// When `segment_size` is `Some(s)`, `contents` is cut into datagrams of `s` bytes (the last may
/// be shorter) by the kernel or by the backend; it must hold at most
/// [`Backend::max_gso_segments`] segments and at most [`MAX_UDP_PAYLOAD`] bytes.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    /// Where the datagram(s) go. IPv4 destinations work on a dual-stack `[::]` socket.
    pub dst: SocketAddr,
    /// Size of each datagram inside `contents`, or `None` for one datagram.
    pub segment_size: Option<usize>,
    /// ECN codepoint for these datagrams; `None` keeps the socket's TOS (DSCP EF, Not-ECT).
    pub ecn: Option<Ecn>,
    /// The bytes to send; borrowed only for the duration of [`Backend::send`].
    pub contents: &'a [u8],
}

/// What arrived in one caller buffer: `len` bytes holding `len / stride` (rounded up) datagrams.
///
/// With GRO a buffer holds several datagrams from the same source, each `stride` bytes (the last
/// may be shorter). Without GRO `stride == len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Source address of the datagram(s); IPv4-mapped IPv6 addresses are reported as IPv4.
    pub src: SocketAddr,
    /// Local IP the datagram(s) were addressed to (IP_PKTINFO), where the OS reports it.
    pub dst_ip: Option<IpAddr>,
    /// Bytes written into the caller's buffer.
    pub len: usize,
    /// Size of each datagram in the buffer (GRO segment size).
    pub stride: usize,
    /// ECN codepoint of the datagram(s), where the OS reports it.
    pub ecn: Option<Ecn>,
    /// True when a datagram was larger than the caller's buffer: `len` bytes of it were kept and
    /// the rest dropped. Never silently set `false` for a cut datagram.
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            dst_ip: None,
            len: 0,
            stride: 0,
            ecn: None,
            truncated: false,
        }
    }
}

impl RecvMeta {
    /// Number of datagrams in the buffer (`len / stride`, rounded up; 0 when empty).
    pub fn datagrams(&self) -> usize {
        if self.len == 0 || self.stride == 0 {
            0
        } else {
            self.len.div_ceil(self.stride)
        }
    }
}

/// Which implementation a [`Backend`] is, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// io_uring with provided buffers, multishot receive and GSO/GRO (Linux).
    Uring,
    /// `quinn-udp` over a std socket.
    Portable,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uring => "uring",
            Self::Portable => "portable",
        })
    }
}

/// The packet I/O surface every backend implements; blocking, one thread per backend.
///
/// Calling contract: one thread drives a backend (it is `Send`, not `Sync`); `send` returns when
/// every transmit has been handed to the kernel, so the caller may reuse its buffers at once;
/// `recv` returns as soon as at least one buffer is filled, or `Ok(0)` when the timeout passes.
pub trait Backend: Send + fmt::Debug {
    /// Sends every transmit of the batch. Transient ICMP-induced errors (ECONNREFUSED, host or
    /// network unreachable) are retried once and otherwise ignored, as UDP is lossy anyway; the
    /// first hard error is returned after the whole batch was attempted.
    fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<()>;

    /// Receives into `bufs`, filling `meta[i]` for each buffer used; returns how many buffers
    /// were filled (at most `min(bufs.len(), meta.len())`), or `Ok(0)` once `timeout` passed
    /// (`None` waits forever). A GRO batch larger than one buffer continues in the next buffer
    /// or the next call; nothing is dropped unless a single datagram exceeds its buffer, which is
    /// flagged in [`RecvMeta::truncated`].
    fn recv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        timeout: Option<Duration>,
    ) -> io::Result<usize>;

    /// Receives without copying: hands each received batch (one datagram, or a GRO
    /// super-datagram of `len / stride` datagrams) to `f` as a slice of the backend's own
    /// buffer, which is recycled when `f` returns. Returns the number of batches, or `Ok(0)`
    /// once `timeout` passed. Nothing is truncated: backend buffers hold any UDP payload.
    /// For forwarders, parsers, and sessions that decrypt in place (the bytes are the caller's
    /// to overwrite until `f` returns); it saves one copy per batch.
    fn recv_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8]),
    ) -> io::Result<usize>;

    /// Receives and forwards: hands each received batch to `f` like [`Self::recv_with`], with
    /// a [`Forwards`] in which `f` names the datagrams of the batch to send on and where (byte
    /// ranges of the slice it got, which it may have rewritten). The backend groups them into
    /// GSO runs and sends them before the call returns.
    ///
    /// uring sends straight from the receive buffer: one submission per call for every batch's
    /// sends, the buffer going back to the kernel when its sends complete (no copy, no wait).
    /// portable sends from its receive slots with `sendmsg`. Send failures are not returned;
    /// they are counted in [`Self::forward_failures`] (UDP is lossy, a forwarder carries on).
    /// Returns the number of batches, or `Ok(0)` once `timeout` passed.
    fn forward_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8], &mut Forwards),
    ) -> io::Result<usize>;

    /// Datagrams named in [`Forwards`] that were not sent (send error, range outside the
    /// batch), since the backend was made.
    fn forward_failures(&self) -> u64;

    /// Most datagrams one GSO [`Transmit`] may carry (1 when GSO is unavailable).
    fn max_gso_segments(&self) -> usize;

    /// Most datagrams one receive may coalesce (1 when GRO is off or unavailable).
    fn gro_segments(&self) -> usize;

    /// The bound local address (the real port when bound to port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Which implementation this is.
    fn kind(&self) -> BackendKind;

    /// Times a receive found no free buffer of the backend's own (uring: the provided-buffer
    /// ring ran dry) and waited to be re-armed while the socket queue held the datagrams; 0
    /// for backends without such buffers. A count that keeps rising means the receiving
    /// thread falls behind its socket.
    fn recv_buffer_stalls(&self) -> u64 {
        0
    }
}

/// How to choose the backend: `--io auto|uring|portable` or `WAVRY_IO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IoMode {
    /// io_uring when the probe passes, else portable with one warning.
    #[default]
    Auto,
    /// io_uring or a typed error ([`NetError::UringUnavailable`]); never downgrades.
    Uring,
    /// The portable `quinn-udp` backend.
    Portable,
}

impl IoMode {
    /// Environment variable that selects the mode when no flag is given.
    pub const ENV: &'static str = "WAVRY_IO";

    /// Reads [`IoMode::ENV`]; unset or empty means [`IoMode::Auto`].
    pub fn from_env() -> Result<Self, NetError> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Self::Auto),
        }
    }
}

impl FromStr for IoMode {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Self::Uring),
            "portable" => Ok(Self::Portable),
            other => Err(NetError::InvalidIoMode(other.to_owned())),
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Uring => "uring",
            Self::Portable => "portable",
        })
    }
}

/// Socket and backend options; [`Config::default`] is what RIFT uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // independent switches
pub struct Config {
    /// TOS / IPV6_TCLASS byte for every datagram; default [`TOS_DSCP_EF`].
    pub tos: u8,
    /// Requested SO_RCVBUF in bytes (SO_RCVBUFFORCE is tried first when privileged).
    pub recv_buffer: usize,
    /// Requested SO_SNDBUF in bytes (SO_SNDBUFFORCE is tried first when privileged).
    pub send_buffer: usize,
    /// Ask for UDP_GRO on receive (coalesced super-datagrams with a stride).
    pub gro: bool,
    /// Ask the kernel to report ICMP errors to this unconnected socket (IP_RECVERR). Off by
    /// default; when on, backends drain the error queue and carry on.
    pub icmp_errors: bool,
    /// uring: use zero-copy SendMsgZc. Off by default: on loopback it measured ~25-35 % fewer
    /// packets per CPU-second than plain SendMsg (the kernel copies anyway and every send gets a
    /// second notification completion). Re-measure on a real NIC before turning it on.
    pub send_zc: bool,
    /// uring: number of provided receive buffers (power of two, each ~64 KiB). Not all are
    /// posted at once: only enough for ~256 KiB of recent completions (at least 8, more after
    /// the ring ran dry), the most recently returned first, so 64 KiB GRO batches land in
    /// buffers still in cache while single datagrams use every buffer. A ring that runs dry
    /// only pauses the multishot receive (the socket queue holds the datagrams until it is
    /// re-armed).
    pub uring_buffers: u16,
    /// uring: completion-queue size (≥ 4096: a CQ overflow silently ends a multishot receive).
    pub uring_cq_entries: u32,
    /// Treat io_uring as unavailable (as `WAVRY_IO_DISABLE_URING=1` does), e.g. in tests.
    pub disable_uring: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tos: TOS_DSCP_EF,
            recv_buffer: 32 << 20,
            send_buffer: 8 << 20,
            gro: true,
            icmp_errors: false,
            send_zc: false,
            uring_buffers: 64,
            uring_cq_entries: 8192,
            disable_uring: false,
        }
    }
}

/// Errors from choosing and opening a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// `--io` / `WAVRY_IO` had a value other than auto, uring or portable.
    #[error("invalid io mode {0:?}: expected auto, uring or portable")]
    InvalidIoMode(String),
    /// `--io uring` was asked for but io_uring cannot run here.
    #[error("io_uring unavailable: {reason}")]
    UringUnavailable {
        /// What the probe found (missing opcode, setup error, disabled by env, ...).
        reason: String,
    },
    /// A socket or ring operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// A bound socket with whichever backend [`bind`] chose; implements [`Backend`].
#[derive(Debug)]
pub enum NetSocket {
    /// The io_uring backend (boxed: its ring state is large).
    #[cfg(target_os = "linux")]
    Uring(Box<UringBackend>),
    /// The portable backend.
    Portable(PortableBackend),
}

macro_rules! delegate {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            #[cfg(target_os = "linux")]
            NetSocket::Uring($b) => $e,
            NetSocket::Portable($b) => $e,
        }
    };
}

impl Backend for NetSocket {
    fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<()> {
        delegate!(self, b => b.send(transmits))
    }

    fn recv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        delegate!(self, b => b.recv(bufs, meta, timeout))
    }

    fn recv_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8]),
    ) -> io::Result<usize> {
        delegate!(self, b => b.recv_with(timeout, f))
    }

    fn forward_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8], &mut Forwards),
    ) -> io::Result<usize> {
        delegate!(self, b => b.forward_with(timeout, f))
    }

    fn forward_failures(&self) -> u64 {
        delegate!(self, b => b.forward_failures())
    }

    fn max_gso_segments(&self) -> usize {
        delegate!(self, b => b.max_gso_segments())
    }

    fn gro_segments(&self) -> usize {
        delegate!(self, b => b.gro_segments())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        delegate!(self, b => b.local_addr())
    }

    fn kind(&self) -> BackendKind {
        delegate!(self, b => b.kind())
    }

    fn recv_buffer_stalls(&self) -> u64 {
        delegate!(self, b => b.recv_buffer_stalls())
    }
}

/// Is this error the delayed echo of an ICMP message (port/host/net unreachable), which says
/// nothing about the current operation and must not stop the I/O loop?
pub(crate) fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    ) || is_icmp_errno(e.raw_os_error())
}

#[cfg(target_os = "linux")]
fn is_icmp_errno(code: Option<i32>) -> bool {
    matches!(
        code,
        Some(libc::EHOSTDOWN | libc::ENETDOWN | libc::EPROTO | libc::ENONET)
    )
}

#[cfg(not(target_os = "linux"))]
fn is_icmp_errno(_code: Option<i32>) -> bool {
    false
}

/// An error with its sources, one after another ("a: b: c"): aya nests the kernel's answer
/// several sources deep, and the privilege check reads the whole text.
#[cfg(all(target_os = "linux", not(wavry_no_bpf)))]
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}
