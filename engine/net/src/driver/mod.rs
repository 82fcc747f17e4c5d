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

use crate::{Backend, BackendKind, Ecn, MAX_UDP_PAYLOAD, NetError, NetSocket, Transmit};

mod driven;
mod handles;

use self::driven::Core;
pub use self::handles::{ClientDriver, HostDriver};

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
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(1),
            command_capacity: 1024,
            media_high_water: None,
            thread_name: "wavry-driver".into(),
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

/// The I/O thread's state.
struct Worker<C: Core> {
    core: C,
    socket: NetSocket,
    commands: Receiver<Command>,
    events: Sender<C::Out>,
    relay_events: Sender<([u8; 16], RelayEvent)>,
    spares: Sender<Vec<u8>>,
    cfg: DriverConfig,
    tx: Vec<u8>,
    tx_meta: [(SocketAddr, usize, Option<usize>, Option<Ecn>); TX_SLOTS],
    /// A frame waiting for its session's media queue to drain below the high-water mark.
    held: Option<Command>,
    max_segments: usize,
    stats: DriverStats,
    stop: bool,
    /// The last receive returned many batches: look again without waiting.
    more: bool,
    /// The backend's receive timeout is precise (io_uring timespec), not tick-rounded.
    precise_wait: bool,
    /// Raised while blocked in a receive; the handle then wakes the thread with a datagram.
    sleeping: Arc<AtomicBool>,
    /// Source address of those wake datagrams (skipped, never given to a session).
    wake_from: Option<SocketAddr>,
}

impl<C: Core> Worker<C> {
    fn run(mut self) -> Result<DriverStats, DriverError> {
        tracing::info!(
            backend = %self.socket.kind(),
            local = ?self.socket.local_addr().ok(),
            gso = self.max_segments,
            "driver started"
        );
        warm_up_fec();
        let result = self.run_loop();
        let now = Instant::now();
        self.core.close_all(now, "shutdown");
        self.flush(now);
        self.forward_events();
        tracing::info!(stats = ?self.stats, "driver stopped");
        result.map(|()| self.stats)
    }

    fn run_loop(&mut self) -> Result<(), DriverError> {
        loop {
            let now = Instant::now();
            // A held frame that may go in now (the last flush drained its session's queue)
            // must not wait for a datagram or a timer.
            let admit = match self.held.take() {
                Some(cmd) => {
                    let hold = self.must_hold(&cmd);
                    self.held = Some(cmd);
                    !hold
                }
                None => false,
            };
            let timer = if admit {
                Some(Duration::ZERO)
            } else {
                self.core
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now))
            };
            match timer {
                // Pacer waits shorter than a timer can honour: look at the socket and go on.
                Some(w) if self.more || w < SPIN => {
                    self.receive(Duration::ZERO)?;
                }
                _ if self.more => {
                    self.receive(Duration::ZERO)?;
                }
                // A timer (the pacer, mostly) fires before `max_wait`. The portable backend
                // waits with SO_RCVTIMEO, which the kernel rounds up to a scheduler tick
                // (1-4 ms): poll, then sleep precisely instead.
                Some(w) if w < self.cfg.max_wait && !self.precise_wait => {
                    if self.receive(Duration::ZERO)? == 0 && !w.is_zero() {
                        std::thread::sleep(w);
                    }
                }
                Some(w) => {
                    self.blocking_receive(w.min(self.cfg.max_wait))?;
                }
                None => {
                    self.blocking_receive(self.cfg.max_wait)?;
                }
            }
            let now = Instant::now();
            self.core.handle_timeout(now);
            self.apply_commands(now);
            if self.stop {
                return Ok(());
            }
            self.flush(now);
            self.forward_events();
        }
    }

    /// A receive that may block: the application's handle sees `sleeping` and sends a wake
    /// datagram with its next command, so commands do not wait for the timeout.
    fn blocking_receive(&mut self, wait: Duration) -> Result<usize, DriverError> {
        if self.wake_from.is_none() {
            return self.receive(wait);
        }
        self.sleeping.store(true, Ordering::SeqCst);
        // A command sent before the flag was up found it down and sent no wake: look first.
        let wait = if self.commands.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let r = self.receive(wait);
        self.sleeping.store(false, Ordering::SeqCst);
        r
    }

    /// One receive call; every datagram goes to the core, decrypted in place in the backend's
    /// own buffer (`recv_with`: no copy into driver buffers). Returns the batches received.
    fn receive(&mut self, wait: Duration) -> Result<usize, DriverError> {
        let Self {
            socket,
            core,
            stats,
            wake_from,
            ..
        } = self;
        let mut now = None;
        let r = socket.recv_with(Some(wait), &mut |m, bytes| {
            if Some(m.src) == *wake_from {
                return;
            }
            let now = *now.get_or_insert_with(Instant::now);
            for d in bytes.chunks_mut(m.stride.max(1)) {
                stats.datagrams_received += 1;
                stats.bytes_received += d.len() as u64;
                core.handle_datagram(now, m, d);
            }
        });
        let n = match r {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(source) => {
                return Err(DriverError::Io {
                    context: "receiving",
                    source,
                });
            }
        };
        // Many batches at once: more are likely queued, so look again without waiting.
        self.more = n >= RX_BATCHES;
        if n > 0 {
            self.stats.recv_batches += 1;
        }
        self.stats.recv_buffer_stalls = self.socket.recv_buffer_stalls();
        self.stats.endpoint = self.core.endpoint_stats();
        Ok(n)
    }

    /// Is this command a frame for a session whose media queue is above the high-water mark?
    fn must_hold(&mut self, cmd: &Command) -> bool {
        let Command::Frame { session, .. } = cmd else {
            return false;
        };
        let Some(hw) = self.cfg.media_high_water else {
            return false;
        };
        self.core
            .session(*session)
            .is_ok_and(|s| s.is_connected() && s.media_queued() >= hw)
    }

    fn apply_commands(&mut self, now: Instant) {
        if let Some(cmd) = self.held.take() {
            if self.must_hold(&cmd) {
                self.held = Some(cmd);
                return;
            }
            self.apply(now, cmd);
        }
        while !self.stop {
            match self.commands.try_recv() {
                Ok(cmd) => {
                    if self.must_hold(&cmd) {
                        self.held = Some(cmd);
                        return;
                    }
                    self.apply(now, cmd);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    tracing::debug!("every driver handle is gone: stopping");
                    self.stop = true;
                }
            }
        }
    }

    fn apply(&mut self, now: Instant, cmd: Command) {
        self.stats.commands += 1;
        let (what, session, result) = match cmd {
            Command::Frame {
                session,
                data,
                meta,
                interval,
            } => {
                // The session sends the chunks straight from `data` and hands the buffers of
                // frames past their deadline back; they go to the application's spares (a
                // full spare queue simply frees them).
                let spares = &self.spares;
                let r = match self.core.session(session) {
                    Ok(s) => {
                        let r = s.send_frame_buf(now, data, meta, interval).map(|_| ());
                        while let Some(b) = s.take_spent_frame() {
                            let _ = spares.try_send(b);
                        }
                        r
                    }
                    Err(e) => {
                        let _ = spares.try_send(data);
                        Err(e)
                    }
                };
                ("frame", session, r)
            }
            Command::Input { session, input } => (
                "input",
                session,
                self.with(session, |s| s.send_input(now, input)),
            ),
            Command::Control { session, content } => (
                "control",
                session,
                self.with(session, |s| s.send_control(now, content)),
            ),
            Command::Audio {
                session,
                timestamp_us,
                data,
            } => (
                "audio",
                session,
                self.with(session, |s| s.send_audio(now, timestamp_us, &data)),
            ),
            Command::Recycle { session, frame } => {
                if let Ok(s) = self.core.session(session) {
                    s.recycle(frame);
                }
                return;
            }
            Command::Close { session, reason } => (
                "close",
                session,
                self.with(session, |s| {
                    s.close(now, &reason);
                    Ok(())
                }),
            ),
            Command::Snapshot { session, reply } => {
                let driver = self.stats;
                let snap = self.core.session(session).ok().map(|s| SessionSnapshot {
                    connected: s.is_connected(),
                    peer: s.peer(),
                    remote: s.remote(),
                    rtt: s.rtt(),
                    target_bps: s.target_bitrate(),
                    media_queued: s.media_queued(),
                    unacked: s.unacked(),
                    stats: s.stats(),
                    driver,
                });
                let _ = reply.try_send(snap);
                return;
            }
            Command::Call { session, call } => {
                if let Ok(s) = self.core.session(session) {
                    (call.0)(s, now);
                } else {
                    self.stats.commands_rejected += 1;
                }
                return;
            }
            Command::Endpoint { call } => {
                if let Some(ep) = self.core.endpoint() {
                    (call.0)(ep, now);
                } else {
                    self.stats.commands_rejected += 1;
                }
                return;
            }
            Command::Raw { to, data } => {
                let t = Transmit {
                    dst: to,
                    segment_size: None,
                    ecn: None,
                    contents: &data,
                };
                self.stats.send_calls += 1;
                match self.socket.send(&[t]) {
                    Ok(()) => {
                        self.stats.datagrams_sent += 1;
                        self.stats.bytes_sent += data.len() as u64;
                    }
                    Err(e) => {
                        self.stats.send_errors += 1;
                        tracing::debug!(error = %e, %to, "raw datagram not sent");
                    }
                }
                return;
            }
            Command::Shutdown => {
                self.stop = true;
                return;
            }
        };
        if let Err(e) = result {
            self.stats.commands_rejected += 1;
            tracing::debug!(command = what, %session, error = %e, "command refused");
        }
    }

    fn with(
        &mut self,
        h: SessionHandle,
        f: impl FnOnce(&mut Session) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        self.core.session(h).and_then(f)
    }

    /// Drains `poll_transmit` into batches of up to `TX_SLOTS` transmits per send call.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut count = 0;
            for slot in self.tx.chunks_mut(SLOT) {
                let slot = &mut slot[..MAX_UDP_PAYLOAD];
                let Some(t) = self.core.poll_transmit(now, slot, self.max_segments) else {
                    break;
                };
                // The backend sends from the socket's address; `t.src_ip` (the address the
                // peer wrote to) matters on a multi-homed host bound to a wildcard address.
                let ecn = t.ecn.map(|e| match e {
                    RiftEcn::Ect0 => Ecn::Ect0,
                    RiftEcn::Ect1 => Ecn::Ect1,
                    RiftEcn::Ce => Ecn::Ce,
                });
                self.tx_meta[count] = (t.destination, t.len, t.segment_size, ecn);
                count += 1;
            }
            if count == 0 {
                return;
            }
            let empty = Transmit {
                dst: self.tx_meta[0].0,
                segment_size: None,
                ecn: None,
                contents: &[],
            };
            let mut batch = [empty; TX_SLOTS];
            let (mut datagrams, mut bytes) = (0, 0);
            for ((t, slot), &(dst, len, seg, ecn)) in batch
                .iter_mut()
                .zip(self.tx.chunks(SLOT))
                .zip(&self.tx_meta[..count])
            {
                let seg = seg.filter(|&s| s > 0 && s < len);
                datagrams += seg.map_or(1, |s| len.div_ceil(s)) as u64;
                bytes += len as u64;
                *t = Transmit {
                    dst,
                    segment_size: seg,
                    ecn,
                    contents: &slot[..len],
                };
            }
            self.stats.send_calls += 1;
            self.stats.transmits += count as u64;
            match self.socket.send(&batch[..count]) {
                Ok(()) => {
                    self.stats.datagrams_sent += datagrams;
                    self.stats.bytes_sent += bytes;
                }
                Err(e) => {
                    self.stats.send_errors += 1;
                    tracing::warn!(error = %e, datagrams, "send failed; datagrams dropped");
                }
            }
            if count < TX_SLOTS {
                return;
            }
        }
    }

    fn forward_events(&mut self) {
        while let Some((h, e)) = self.core.poll_event() {
            match &e {
                Event::Connected { peer, .. } => {
                    tracing::info!(session = %h, %peer, "session connected");
                }
                Event::Closed(reason) => {
                    tracing::info!(session = %h, ?reason, "session closed");
                }
                _ => {}
            }
            // A dropped receiver means nobody listens; the event is discarded.
            let _ = self.events.send(C::wrap(h, e));
        }
        while let Some((sid, e)) = self.core.poll_relay_event() {
            tracing::info!(
                session = %format_args!("{:032x}", u128::from_be_bytes(sid)),
                event = ?e,
                "relay path"
            );
            let _ = self.relay_events.send((sid, e));
        }
    }
}

/// Runs one Reed-Solomon encode and decode so that the codec's lazily built tables (about
/// 9 ms on first use, measured here) are ready before the first frame instead of stalling the
/// I/O thread mid-stream.
fn warm_up_fec() {
    let started = Instant::now();
    let mut codec = wavry_rift::fec::FecCodec::default();
    let shards = [[0x5a_u8; 64], [0xa5; 64]];
    let mut parity = [0u8; 64];
    let encoded = codec.encode(64, 2, 1, shards.iter().map(|s| &s[..]), |_, p| {
        parity.copy_from_slice(p);
    });
    let decoded = codec.decode(
        64,
        2,
        1,
        [(0, &shards[0][..])],
        [(0, &parity[..])],
        |_, _| {},
    );
    if encoded.is_err() || decoded.is_err() {
        tracing::debug!("FEC warm-up failed; the first frame pays for the codec tables");
    }
    tracing::debug!(elapsed = ?started.elapsed(), "FEC codec warmed up");
}

/// The application's side of a driver thread, shared by host and client drivers.
#[derive(Debug)]
struct Handle<Out> {
    commands: Sender<Command>,
    events: Receiver<Out>,
    relay_events: Receiver<([u8; 16], RelayEvent)>,
    spares: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Result<DriverStats, DriverError>>>,
    local: SocketAddr,
    kind: BackendKind,
    sleeping: Arc<AtomicBool>,
    wake: Option<Wake>,
}

/// A loopback socket that sends one-byte datagrams to a sleeping driver's socket.
#[derive(Debug)]
struct Wake {
    socket: UdpSocket,
    to: SocketAddr,
}

impl Wake {
    /// A waker for a driver bound to `local` (an unspecified address is reached over the
    /// loopback of its family); `None`, with a debug line, when it cannot be opened.
    fn new(local: SocketAddr) -> Option<Self> {
        let ip = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        match UdpSocket::bind((ip, 0)) {
            Ok(socket) => Some(Self {
                socket,
                to: SocketAddr::new(ip, local.port()),
            }),
            Err(e) => {
                tracing::debug!(error = %e, "no wake socket; commands wait up to max_wait");
                None
            }
        }
    }
}

impl<Out: Send + 'static> Handle<Out> {
    fn spawn<C: Core<Out = Out>>(
        core: C,
        socket: NetSocket,
        cfg: DriverConfig,
    ) -> Result<Self, DriverError> {
        let local = socket.local_addr().map_err(|source| DriverError::Io {
            context: "reading the local address",
            source,
        })?;
        let kind = socket.kind();
        let (cmd_tx, cmd_rx) = bounded(cfg.command_capacity.max(1));
        let (ev_tx, ev_rx) = unbounded();
        let (relay_tx, relay_rx) = unbounded();
        let (sp_tx, sp_rx) = bounded(SPARES);
        let max_segments = socket.max_gso_segments().max(1);
        let name = cfg.thread_name.clone();
        let sleeping = Arc::new(AtomicBool::new(false));
        let wake = Wake::new(local);
        let wake_from = wake.as_ref().and_then(|w| w.socket.local_addr().ok());
        let worker = Worker {
            core,
            socket,
            commands: cmd_rx,
            events: ev_tx,
            relay_events: relay_tx,
            spares: sp_tx,
            cfg,
            tx: vec![0; SLOT * TX_SLOTS],
            tx_meta: [(local, 0, None, None); TX_SLOTS],
            held: None,
            max_segments,
            stats: DriverStats::default(),
            stop: false,
            more: false,
            precise_wait: kind == BackendKind::Uring,
            sleeping: sleeping.clone(),
            wake_from,
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run())
            .map_err(|source| DriverError::Io {
                context: "spawning the driver thread",
                source,
            })?;
        Ok(Self {
            commands: cmd_tx,
            events: ev_rx,
            relay_events: relay_rx,
            spares: sp_rx,
            thread: Some(thread),
            local,
            kind,
            sleeping,
            wake,
        })
    }

    fn send(&self, cmd: Command) -> Result<(), DriverError> {
        // A recycled frame buffer is not urgent: the thread takes it on its next turn (at
        // once while a stream flows), so it costs no wake datagram.
        let urgent = !matches!(cmd, Command::Recycle { .. });
        self.commands.send(cmd).map_err(|_| DriverError::Stopped)?;
        if urgent {
            self.wake();
        }
        Ok(())
    }

    /// Queues a frame unless the command queue is full; then gives its buffer back.
    fn try_send_frame(
        &self,
        session: SessionHandle,
        data: Vec<u8>,
        meta: FrameMeta,
        interval: Duration,
    ) -> Result<Option<Vec<u8>>, DriverError> {
        let cmd = Command::Frame {
            session,
            data,
            meta,
            interval,
        };
        match self.commands.try_send(cmd) {
            Ok(()) => {
                self.wake();
                Ok(None)
            }
            Err(TrySendError::Full(Command::Frame { data, .. })) => Ok(Some(data)),
            Err(TrySendError::Full(_)) => Ok(None),
            Err(TrySendError::Disconnected(_)) => Err(DriverError::Stopped),
        }
    }

    /// Wakes the thread if it is blocked in a receive.
    fn wake(&self) {
        if let Some(w) = &self.wake {
            if self.sleeping.swap(false, Ordering::SeqCst) {
                // Lost wakes only cost up to `max_wait`.
                let _ = w.socket.send_to(&[0], w.to);
            }
        }
    }

    fn snapshot(
        &self,
        session: SessionHandle,
        timeout: Duration,
    ) -> Result<Option<SessionSnapshot>, DriverError> {
        let (reply, answer) = bounded(1);
        self.send(Command::Snapshot { session, reply })?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => DriverError::Timeout,
            RecvTimeoutError::Disconnected => DriverError::Stopped,
        })
    }

    fn call<R: Send + 'static>(
        &self,
        session: SessionHandle,
        timeout: Duration,
        f: impl FnOnce(&mut Session, Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (reply, answer) = bounded(1);
        let call = SessionCall(Box::new(move |s, now| {
            let _ = reply.try_send(f(s, now));
        }));
        self.send(Command::Call { session, call })?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            // The session is gone (the closure was dropped) or the thread stopped.
            RecvTimeoutError::Disconnected => DriverError::Stopped,
            RecvTimeoutError::Timeout => DriverError::Timeout,
        })
    }

    fn call_endpoint<R: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Endpoint, Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (reply, answer) = bounded(1);
        let call = EndpointCall(Box::new(move |ep, now| {
            let _ = reply.try_send(f(ep, now));
        }));
        self.send(Command::Endpoint { call })?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Disconnected => DriverError::Stopped,
            RecvTimeoutError::Timeout => DriverError::Timeout,
        })
    }

    fn take_buffer(&self) -> Vec<u8> {
        let mut b = self.spares.try_recv().unwrap_or_default();
        b.clear();
        b
    }

    fn take_frame_buffer(&self, len: usize) -> Vec<u8> {
        let mut b = self.spares.try_recv().unwrap_or_default();
        b.resize(len, 0);
        b
    }

    fn shutdown(&mut self) -> Result<DriverStats, DriverError> {
        let Some(thread) = self.thread.take() else {
            return Err(DriverError::Stopped);
        };
        // Fails only when the thread already ended; join reports why.
        let _ = self.commands.send(Command::Shutdown);
        thread.join().map_err(|_| DriverError::Panicked)?
    }
}

impl<Out> Drop for Handle<Out> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.commands.send(Command::Shutdown);
            let _ = thread.join();
        }
    }
}
