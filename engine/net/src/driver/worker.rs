//! The I/O thread: one [`Core`] (an endpoint or a session) driven by a socket, the
//! application's commands and the core's timers; batched receives and sends.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The I/O thread's state.
pub(super) struct Worker<C: Core> {
    pub(super) core: C,
    pub(super) socket: NetSocket,
    pub(super) commands: Receiver<Command>,
    pub(super) events: Sender<C::Out>,
    pub(super) relay_events: Sender<([u8; 16], RelayEvent)>,
    pub(super) spares: Sender<Vec<u8>>,
    pub(super) cfg: DriverConfig,
    pub(super) tx: Vec<u8>,
    pub(super) tx_meta: [(SocketAddr, usize, Option<usize>, Option<Ecn>); TX_SLOTS],
    /// A frame waiting for its session's media queue to drain below the high-water mark.
    pub(super) held: Option<Command>,
    pub(super) max_segments: usize,
    pub(super) stats: DriverStats,
    pub(super) stop: bool,
    /// The last receive returned many batches: look again without waiting.
    pub(super) more: bool,
    /// The backend's receive timeout is precise (io_uring timespec), not tick-rounded.
    pub(super) precise_wait: bool,
    /// Raised while blocked in a receive; the handle then wakes the thread with a datagram.
    pub(super) sleeping: Arc<AtomicBool>,
    /// Source address of those wake datagrams (skipped, never given to a session).
    pub(super) wake_from: Option<SocketAddr>,
}

impl<C: Core> Worker<C> {
    pub(super) fn run(mut self) -> Result<DriverStats, DriverError> {
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
pub(super) fn warm_up_fec() {
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
