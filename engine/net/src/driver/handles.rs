//! The application's side of a driver: [`HostDriver`] and [`ClientDriver`], thin typed
//! wrappers that send [`Command`]s to the I/O thread and receive its events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use wavry_rift::identity::IdentityKey;
use wavry_rift::proto::{InputMessage, control_message::Content as ControlContent};
use wavry_rift::relay_client::{RelayClientConfig, RelayEvent, RelayLease};
use wavry_rift::session::{
    Endpoint, Event, Frame, FrameMeta, Session, SessionConfig, SessionHandle,
};

use super::{CLIENT, Command, DriverConfig, DriverError, DriverStats, Handle, SessionSnapshot};
use crate::{BackendKind, NetSocket, Scheduling};

/// A host: an [`Endpoint`] (sessions created by incoming handshakes) on its own I/O thread.
#[derive(Debug)]
pub struct HostDriver {
    inner: Handle<(SessionHandle, Event)>,
}

impl HostDriver {
    /// Starts the I/O thread for `endpoint` on `socket`.
    pub fn spawn(
        socket: NetSocket,
        endpoint: Endpoint,
        cfg: DriverConfig,
    ) -> Result<Self, DriverError> {
        Ok(Self {
            inner: Handle::spawn(endpoint, socket, cfg)?,
        })
    }

    /// Adds a relay path: the endpoint presents `lease` (the host's own, for one relay
    /// session) to its relay, keeps it admitted, and serves the client that handshakes
    /// through it. Progress arrives on [`Self::relay_events`].
    pub fn add_relay_path(
        &self,
        lease: RelayLease,
        cfg: RelayClientConfig,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        self.inner.call_endpoint(timeout, move |ep, now| {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            ep.add_relay_path(now, unix_ms, lease, cfg)
        })??;
        Ok(())
    }

    /// Removes a relay path (true when it existed); its session, if any, ends by timeout.
    pub fn remove_relay_path(
        &self,
        relay_addr: SocketAddr,
        session_id: [u8; 16],
        timeout: Duration,
    ) -> Result<bool, DriverError> {
        self.inner.call_endpoint(timeout, move |ep, _| {
            ep.remove_relay_path(relay_addr, session_id)
        })
    }

    /// A relay path's state, `(admitted, failed)`; `None` when there is no such path.
    pub fn relay_path_state(
        &self,
        relay_addr: SocketAddr,
        session_id: [u8; 16],
        timeout: Duration,
    ) -> Result<Option<(bool, bool)>, DriverError> {
        self.inner.call_endpoint(timeout, move |ep, _| {
            ep.relay_path_state(relay_addr, session_id)
        })
    }

    /// Relay-path events with their relay session id (admitted, rejected with a reason,
    /// unanswered, lease ending): drain them.
    pub fn relay_events(&self) -> &Receiver<([u8; 16], RelayEvent)> {
        &self.inner.relay_events
    }

    /// Runs `f` on the I/O thread with the endpoint and returns its result.
    pub fn call_endpoint<R: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Endpoint, Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.inner.call_endpoint(timeout, f)
    }

    /// Sends one datagram that is not RIFT (a NAT hole punch, a STUN request) from the
    /// driver's socket, so it leaves from the port clients reach.
    pub fn send_raw(&self, to: SocketAddr, data: Vec<u8>) -> Result<(), DriverError> {
        self.inner.send(Command::Raw { to, data })
    }

    /// The socket's bound address (clients connect here).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Which backend the socket uses.
    pub fn backend(&self) -> BackendKind {
        self.inner.kind
    }

    /// How the I/O thread is scheduled ([`DriverConfig::realtime`]).
    pub fn scheduling(&self) -> &Scheduling {
        &self.inner.scheduling
    }

    /// Session events, tagged with the session they came from. Unbounded: keep draining it.
    pub fn events(&self) -> &Receiver<(SessionHandle, Event)> {
        &self.inner.events
    }

    /// The raw command queue (for `select!` or commands without a helper).
    pub fn commands(&self) -> &Sender<Command> {
        &self.inner.commands
    }

    /// Queues a video frame for `session` (blocks while the command queue is full).
    pub fn send_frame(
        &self,
        session: SessionHandle,
        data: Vec<u8>,
        meta: FrameMeta,
        interval: Duration,
    ) -> Result<(), DriverError> {
        self.inner.send(Command::Frame {
            session,
            data,
            meta,
            interval,
        })
    }

    /// Queues a video frame for `session` without blocking. When the command queue is full
    /// (the stream is behind), the frame is not queued and its buffer comes back as
    /// `Ok(Some(data))`: an encoder thread can skip the frame or retry, and is never parked.
    pub fn try_send_frame(
        &self,
        session: SessionHandle,
        data: Vec<u8>,
        meta: FrameMeta,
        interval: Duration,
    ) -> Result<Option<Vec<u8>>, DriverError> {
        self.inner.try_send_frame(session, data, meta, interval)
    }

    /// Queues an input event for `session`.
    pub fn send_input(
        &self,
        session: SessionHandle,
        input: InputMessage,
    ) -> Result<(), DriverError> {
        self.inner.send(Command::Input { session, input })
    }

    /// Queues a reliable control message for `session`.
    pub fn send_control(
        &self,
        session: SessionHandle,
        content: ControlContent,
    ) -> Result<(), DriverError> {
        self.inner.send(Command::Control { session, content })
    }

    /// Queues one Opus packet for `session`.
    pub fn send_audio(
        &self,
        session: SessionHandle,
        timestamp_us: u64,
        data: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.inner.send(Command::Audio {
            session,
            timestamp_us,
            data,
        })
    }

    /// Gives a delivered frame's buffer back to its session.
    pub fn recycle(&self, session: SessionHandle, frame: Frame) -> Result<(), DriverError> {
        self.inner.send(Command::Recycle { session, frame })
    }

    /// Closes one session (a Goodbye goes out).
    pub fn close(
        &self,
        session: SessionHandle,
        reason: impl Into<String>,
    ) -> Result<(), DriverError> {
        self.inner.send(Command::Close {
            session,
            reason: reason.into(),
        })
    }

    /// Asks the thread for `session`'s state; `None` when no such session is live.
    pub fn snapshot(
        &self,
        session: SessionHandle,
        timeout: Duration,
    ) -> Result<Option<SessionSnapshot>, DriverError> {
        self.inner.snapshot(session, timeout)
    }

    /// Runs `f` with `session` on the driver thread and returns its result (file transfer,
    /// clipboard and every other [`Session`] call). `Stopped` if the session does not exist.
    pub fn call<R: Send + 'static>(
        &self,
        session: SessionHandle,
        timeout: Duration,
        f: impl FnOnce(&mut Session, Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.inner.call(session, timeout, f)
    }

    /// An empty buffer for the next frame: a spent frame buffer when one is back, else new.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.inner.take_buffer()
    }

    /// A buffer of exactly `len` bytes for the next frame, for an encoder that overwrites
    /// all of it: a spent frame buffer when one is back (its old bytes are left in place, so
    /// nothing is zeroed when frames keep their size), else a new, zeroed one.
    pub fn take_frame_buffer(&self, len: usize) -> Vec<u8> {
        self.inner.take_frame_buffer(len)
    }

    /// Closes every session, flushes, joins the thread, and returns its counters (or the
    /// error that ended it).
    pub fn shutdown(mut self) -> Result<DriverStats, DriverError> {
        self.inner.shutdown()
    }
}

/// A client: one [`Session`] to a host on its own I/O thread.
#[derive(Debug)]
pub struct ClientDriver {
    inner: Handle<Event>,
}

impl ClientDriver {
    /// Starts the I/O thread for an existing client `session` on `socket`.
    pub fn spawn(
        socket: NetSocket,
        session: Session,
        cfg: DriverConfig,
    ) -> Result<Self, DriverError> {
        Ok(Self {
            inner: Handle::spawn(session, socket, cfg)?,
        })
    }

    /// Creates a client session to `host` (the handshake starts at once) and its thread.
    pub fn connect(
        socket: NetSocket,
        session_cfg: SessionConfig,
        identity: Arc<IdentityKey>,
        host: SocketAddr,
        cfg: DriverConfig,
    ) -> Result<Self, DriverError> {
        let session = Session::client(Instant::now(), session_cfg, identity, host)?;
        Self::spawn(socket, session, cfg)
    }

    /// Sends one datagram that is not RIFT (a NAT hole punch, a STUN request) from the
    /// driver's socket.
    pub fn send_raw(&self, to: SocketAddr, data: Vec<u8>) -> Result<(), DriverError> {
        self.inner.send(Command::Raw { to, data })
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Which backend the socket uses.
    pub fn backend(&self) -> BackendKind {
        self.inner.kind
    }

    /// How the I/O thread is scheduled ([`DriverConfig::realtime`]).
    pub fn scheduling(&self) -> &Scheduling {
        &self.inner.scheduling
    }

    /// Session events. Unbounded: keep draining it.
    pub fn events(&self) -> &Receiver<Event> {
        &self.inner.events
    }

    /// The raw command queue (`session` fields are ignored by a client driver).
    pub fn commands(&self) -> &Sender<Command> {
        &self.inner.commands
    }

    /// Queues a video frame (blocks while the command queue is full).
    pub fn send_frame(
        &self,
        data: Vec<u8>,
        meta: FrameMeta,
        interval: Duration,
    ) -> Result<(), DriverError> {
        self.inner.send(Command::Frame {
            session: CLIENT,
            data,
            meta,
            interval,
        })
    }

    /// Queues a video frame without blocking; a full command queue gives the buffer back as
    /// `Ok(Some(data))` (see [`HostDriver::try_send_frame`]).
    pub fn try_send_frame(
        &self,
        data: Vec<u8>,
        meta: FrameMeta,
        interval: Duration,
    ) -> Result<Option<Vec<u8>>, DriverError> {
        self.inner.try_send_frame(CLIENT, data, meta, interval)
    }

    /// Queues an input event.
    pub fn send_input(&self, input: InputMessage) -> Result<(), DriverError> {
        self.inner.send(Command::Input {
            session: CLIENT,
            input,
        })
    }

    /// Queues a reliable control message.
    pub fn send_control(&self, content: ControlContent) -> Result<(), DriverError> {
        self.inner.send(Command::Control {
            session: CLIENT,
            content,
        })
    }

    /// Queues one Opus packet.
    pub fn send_audio(&self, timestamp_us: u64, data: Vec<u8>) -> Result<(), DriverError> {
        self.inner.send(Command::Audio {
            session: CLIENT,
            timestamp_us,
            data,
        })
    }

    /// Gives a delivered frame's buffer back to the session.
    pub fn recycle(&self, frame: Frame) -> Result<(), DriverError> {
        self.inner.send(Command::Recycle {
            session: CLIENT,
            frame,
        })
    }

    /// Closes the session (a Goodbye goes out); the thread keeps running until shutdown.
    pub fn close(&self, reason: impl Into<String>) -> Result<(), DriverError> {
        self.inner.send(Command::Close {
            session: CLIENT,
            reason: reason.into(),
        })
    }

    /// Asks the thread for the session's state.
    pub fn snapshot(&self, timeout: Duration) -> Result<SessionSnapshot, DriverError> {
        self.inner
            .snapshot(CLIENT, timeout)?
            .ok_or(DriverError::Stopped)
    }

    /// Runs `f` with the session on the driver thread and returns its result (file transfer,
    /// clipboard and every other [`Session`] call).
    pub fn call<R: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Session, Instant) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.inner.call(CLIENT, timeout, f)
    }

    /// An empty buffer for the next frame: a spent frame buffer when one is back, else new.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.inner.take_buffer()
    }

    /// A buffer of exactly `len` bytes for the next frame, for an encoder that overwrites
    /// all of it: a spent frame buffer when one is back (its old bytes are left in place, so
    /// nothing is zeroed when frames keep their size), else a new, zeroed one.
    pub fn take_frame_buffer(&self, len: usize) -> Vec<u8> {
        self.inner.take_frame_buffer(len)
    }

    /// Closes the session, flushes, joins the thread, and returns its counters (or the error
    /// that ended it).
    pub fn shutdown(mut self) -> Result<DriverStats, DriverError> {
        self.inner.shutdown()
    }
}
