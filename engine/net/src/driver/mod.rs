//! Endpoint drivers: sans-IO RIFT sessions run on a [`Backend`] by one I/O thread each.
//!
//! A [`HostDriver`] owns a [`wavry_rift::session::Endpoint`] (many sessions behind one
//! socket); a [`ClientDriver`] owns one [`Session`]. Each spawns a thread that loops:
//!
//! ```text
//!   recv (timeout = time to poll_timeout(), at most DriverConfig::max_wait)
//!     -> split each GRO batch by stride -> handle_datagram, decrypting in place in the
//!        backend's receive buffer (Backend::recv_with: no copy)
//!   handle_timeout when due
//!   apply application commands (send frame / input / control / audio, recycle, close, ...)
//!   drain poll_transmit into batches of GSO transmits (<= max_gso_segments each) -> send
//!   forward events to the application
//! ```
//!
//! The application talks to the thread over `crossbeam-channel`s: [`Command`]s in (bounded,
//! so a full queue blocks the sender), events out (unbounded: drain them). Receive and transmit
//! buffers are allocated once; the loop itself does not allocate per datagram (frames, events
//! and commands are owned values the application allocates and recycles).
//!
//! Shutdown ([`HostDriver::shutdown`], [`ClientDriver::shutdown`], or dropping the driver)
//! closes every session (a Goodbye goes out), flushes it, and joins the thread.
//!
//! One thread drives one socket; [`crate::ShardedHost`] runs a host over several cores, a
//! driver per `SO_REUSEPORT` socket ([`crate::bind_sharded`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded, unbounded,
};
use wavry_rift::identity::WavryId;
use wavry_rift::proto::{InputMessage, control_message::Content as ControlContent};
use wavry_rift::relay_client::{RelayClientError, RelayEvent};
use wavry_rift::session::{
    Endpoint, EndpointStats, Event, Frame, FrameMeta, Session, SessionError, SessionHandle,
    SessionStats,
};

use wavry_rift::session::Ecn as RiftEcn;

use crate::{
    Backend, BackendKind, Ecn, MAX_UDP_PAYLOAD, NetError, NetSocket, Realtime, Scheduling, Transmit,
};

mod driven;
mod handles;
mod thread;
mod worker;

use self::driven::Core;
pub use self::handles::{ClientDriver, HostDriver};
use self::thread::Handle;

/// Bytes per receive or transmit slot: any UDP payload, GRO/GSO batches included.
const SLOT: usize = 1 << 16;
/// A receive that returned at least this many batches probably left more queued.
const RX_BATCHES: usize = 8;
/// Transmits handed to one `Backend::send` call.
const TX_SLOTS: usize = 8;
/// Spent frame buffers kept for [`HostDriver::take_buffer`] / [`ClientDriver::take_buffer`].
const SPARES: usize = 64;
/// Timer waits shorter than this are not slept: the loop polls the socket and carries on
/// (sleeps and timed waits overshoot by about this much anyway).
const SPIN: Duration = Duration::from_micros(50);
/// The handle a [`ClientDriver`] uses for its single session.
const CLIENT: SessionHandle = SessionHandle::SINGLE;

/// Tunables of a driver thread.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Longest the thread blocks in a receive before it looks at the command queue again
    /// (it also wakes for the session timer). A command sent while the thread blocks wakes it
    /// at once with a one-byte loopback datagram from the handle; this bound only matters if
    /// that wake socket could not be opened (then, on the portable backend, the kernel rounds
    /// SO_RCVTIMEO up to a scheduler tick of 1-4 ms). Default 1 ms.
    pub max_wait: Duration,
    /// Capacity of the command queue; a full queue blocks the application's send. Default 1024.
    pub command_capacity: usize,
    /// Frame admission: while the target session has at least this many media datagrams
    /// waiting for its pacer, a [`Command::Frame`] is held (and the command queue with it), so
    /// a producer faster than the path is slowed down by the bounded queue. `None` (default)
    /// admits every frame at once.
    pub media_high_water: Option<usize>,
    /// Name of the I/O thread. Default `wavry-driver`.
    pub thread_name: String,
    /// Whether the I/O thread asks for real-time scheduling ([`crate::priority`]). Default
    /// [`Realtime::Off`]; the runtimes default to `Auto`.
    pub realtime: Realtime,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(1),
            command_capacity: 1024,
            media_high_water: None,
            thread_name: "wavry-driver".into(),
            realtime: Realtime::Off,
        }
    }
}

/// What the application asks a driver thread to do. A [`ClientDriver`] ignores `session`.
#[derive(Debug)]
pub enum Command {
    /// [`Session::send_frame`]; the buffer comes back through `take_buffer` afterwards.
    Frame {
        /// Target session.
        session: SessionHandle,
        /// Encoded frame.
        data: Vec<u8>,
        /// Sender metadata.
        meta: FrameMeta,
        /// Time until the next frame (1/fps).
        interval: Duration,
    },
    /// [`Session::send_input`].
    Input {
        /// Target session.
        session: SessionHandle,
        /// The input event.
        input: InputMessage,
    },
    /// [`Session::send_control`].
    Control {
        /// Target session.
        session: SessionHandle,
        /// The control message.
        content: ControlContent,
    },
    /// [`Session::send_audio`].
    Audio {
        /// Target session.
        session: SessionHandle,
        /// Capture timestamp, µs.
        timestamp_us: u64,
        /// One Opus packet.
        data: Vec<u8>,
    },
    /// [`Session::recycle`]: gives a delivered frame's buffer back to its session.
    Recycle {
        /// The session that delivered the frame.
        session: SessionHandle,
        /// The frame.
        frame: Frame,
    },
    /// [`Session::close`].
    Close {
        /// Session to close.
        session: SessionHandle,
        /// Goodbye reason sent to the peer.
        reason: String,
    },
    /// Answers with a [`SessionSnapshot`] (`None` when the session does not exist).
    Snapshot {
        /// Session to describe.
        session: SessionHandle,
        /// Where the answer goes.
        reply: Sender<Option<SessionSnapshot>>,
    },
    /// Runs a closure on the driver thread with the session: every [`Session`] call no
    /// command covers (file transfer, clipboard, pause, …). Unknown sessions drop it.
    Call {
        /// Target session.
        session: SessionHandle,
        /// What to do; it gets the driver's `now`.
        call: SessionCall,
    },
    /// Runs a closure on a host driver's thread with its [`Endpoint`]: relay paths and every
    /// endpoint call no command covers. A client driver drops it.
    Endpoint {
        /// What to do; it gets the driver's `now`.
        call: EndpointCall,
    },
    /// Sends one datagram that is not RIFT from the driver's socket, at once: a NAT hole
    /// punch or a STUN request must leave from the port the session uses.
    Raw {
        /// Where it goes.
        to: SocketAddr,
        /// Its bytes (at most one datagram).
        data: Vec<u8>,
    },
    /// Closes every session, flushes, and ends the thread.
    Shutdown,
}

/// What an [`EndpointCall`] runs: the host's endpoint and the driver's `now`.
pub type EndpointFn = Box<dyn FnOnce(&mut Endpoint, Instant) + Send>;

/// A closure for [`Command::Endpoint`].
pub struct EndpointCall(pub EndpointFn);

impl std::fmt::Debug for EndpointCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointCall(..)")
    }
}

/// What a [`SessionCall`] runs: the session and the driver's `now`.
pub type SessionFn = Box<dyn FnOnce(&mut Session, Instant) + Send>;

/// A closure for [`Command::Call`].
pub struct SessionCall(pub SessionFn);

impl std::fmt::Debug for SessionCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCall(..)")
    }
}

/// Counters of one driver thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams fed to the session(s) (GRO batches counted per datagram).
    pub datagrams_received: u64,
    /// UDP payload bytes of those datagrams.
    pub bytes_received: u64,
    /// Datagrams handed to the backend (GSO batches counted per datagram).
    pub datagrams_sent: u64,
    /// UDP payload bytes of those datagrams.
    pub bytes_sent: u64,
    /// `Backend::recv` calls that returned data.
    pub recv_batches: u64,
    /// `Backend::send` calls.
    pub send_calls: u64,
    /// Transmits in those calls (one per GSO batch): `datagrams_sent / transmits` is the mean
    /// GSO batch, the main lever on kernel cost per datagram.
    pub transmits: u64,
    /// `Backend::send` calls that failed (logged; UDP is lossy, the loop carries on).
    pub send_errors: u64,
    /// Received datagrams cut by a too-small buffer (dropped). Always 0 since the driver
    /// receives into the backend's own buffers, which hold any UDP payload.
    pub truncated: u64,
    /// Receives that found the backend's buffers all in use (see
    /// [`Backend::recv_buffer_stalls`]): the thread fell behind its socket for a moment.
    pub recv_buffer_stalls: u64,
    /// Commands applied.
    pub commands: u64,
    /// Commands the session refused (not connected, frame too large, unknown session, ...).
    pub commands_rejected: u64,
    /// A host's endpoint defences (cookies, half-open handshakes, amplification limit, forged
    /// handshake messages); all zero for a client.
    pub endpoint: EndpointStats,
}

/// A session's state as seen from its driver thread.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    /// Hello/HelloAck completed.
    pub connected: bool,
    /// The peer's authenticated identity, once known.
    pub peer: Option<WavryId>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Smoothed RTT, once measured ([`Session::rtt`]).
    pub rtt: Option<Duration>,
    /// DELTA's target bitrate, bit/s.
    pub target_bps: u64,
    /// Media datagrams waiting for the pacer.
    pub media_queued: usize,
    /// Reliable messages not yet acknowledged.
    pub unacked: usize,
    /// The session's counters.
    pub stats: SessionStats,
    /// The driver thread's counters at the same moment.
    pub driver: DriverStats,
}

/// Errors of the driver API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver thread has ended (shut down, or failed: its error comes from `shutdown`).
    #[error("driver thread has stopped")]
    Stopped,
    /// The driver thread panicked.
    #[error("driver thread panicked")]
    Panicked,
    /// [`Realtime::On`] and the OS refused.
    #[error(transparent)]
    Realtime(#[from] crate::priority::RealtimeRefused),
    /// No answer from the driver thread in time.
    #[error("timed out waiting for the driver thread")]
    Timeout,
    /// Creating the session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A relay path's lease could not be used.
    #[error(transparent)]
    Relay(#[from] RelayClientError),
    /// Opening the backend failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A socket or thread operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
