//! Spawning a driver thread and the channels between it and the application's handle; the
//! wake datagram that interrupts a blocking receive when a command arrives.

use super::worker::Worker;
#[allow(clippy::wildcard_imports)]
use super::*;

/// The application's side of a driver thread, shared by host and client drivers.
#[derive(Debug)]
pub(super) struct Handle<Out> {
    pub(super) commands: Sender<Command>,
    pub(super) events: Receiver<Out>,
    pub(super) relay_events: Receiver<([u8; 16], RelayEvent)>,
    pub(super) spares: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Result<DriverStats, DriverError>>>,
    pub(super) local: SocketAddr,
    pub(super) kind: BackendKind,
    pub(super) scheduling: Scheduling,
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
    pub(super) fn new(local: SocketAddr) -> Option<Self> {
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
    pub(super) fn spawn<C: Core<Out = Out>>(
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
        let realtime = worker.cfg.realtime;
        let (sched_tx, sched_rx) = bounded(1);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let raised = crate::priority::raise_current_thread(realtime);
                let refused = raised.is_err();
                let _ = sched_tx.send(raised);
                if refused {
                    return Err(DriverError::Stopped);
                }
                worker.run()
            })
            .map_err(|source| DriverError::Io {
                context: "spawning the driver thread",
                source,
            })?;
        // The thread answers before it does anything else.
        let scheduling = match sched_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(refused)) => {
                let _ = thread.join();
                return Err(refused.into());
            }
            Err(_) => return Err(DriverError::Panicked),
        };
        Ok(Self {
            commands: cmd_tx,
            events: ev_rx,
            relay_events: relay_rx,
            spares: sp_rx,
            thread: Some(thread),
            local,
            kind,
            scheduling,
            sleeping,
            wake,
        })
    }

    pub(super) fn send(&self, cmd: Command) -> Result<(), DriverError> {
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
    pub(super) fn try_send_frame(
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
    pub(super) fn wake(&self) {
        if let Some(w) = &self.wake {
            if self.sleeping.swap(false, Ordering::SeqCst) {
                // Lost wakes only cost up to `max_wait`.
                let _ = w.socket.send_to(&[0], w.to);
            }
        }
    }

    pub(super) fn snapshot(
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

    pub(super) fn call<R: Send + 'static>(
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

    pub(super) fn call_endpoint<R: Send + 'static>(
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

    pub(super) fn take_buffer(&self) -> Vec<u8> {
        let mut b = self.spares.try_recv().unwrap_or_default();
        b.clear();
        b
    }

    pub(super) fn take_frame_buffer(&self, len: usize) -> Vec<u8> {
        let mut b = self.spares.try_recv().unwrap_or_default();
        b.resize(len, 0);
        b
    }

    pub(super) fn shutdown(&mut self) -> Result<DriverStats, DriverError> {
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
