//! Portable backend: `quinn-udp` over a std socket (GSO/GRO, packet info and ECN where the OS
//! has them). No `unsafe` here; it builds on every OS `quinn-udp` supports.
//!
//! One exception on Linux: sends go through `cmsg::send_msg` (the same single `sendmsg` with
//! UDP_SEGMENT) because quinn-udp 0.6 puts its own TOS control message (ECN bits only) on every
//! datagram, which would erase DSCP EF. Elsewhere quinn-udp sends and DSCP is not set.
//!
//! The socket stays non-blocking (as `quinn-udp` requires). A blocking receive with a timeout
//! waits by peeking in blocking mode with SO_RCVTIMEO, which costs three extra syscalls only when
//! the socket was empty. Datagrams land in backend-owned 64 KiB slots first, so a datagram longer
//! than the caller's buffer is detected exactly (recvmmsg alone would cut it silently).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use quinn_udp::{BATCH_SIZE, EcnCodepoint, UdpSocketState};

use crate::deliver::Staged;
use crate::socket::{canonical, drain_errors, map_dst};
use crate::{Backend, BackendKind, Config, Ecn, Forwards, RecvMeta, Transmit, is_icmp_error};

/// Bytes per receive slot: any UDP payload or GRO super-datagram fits.
const SLOT: usize = 1 << 16;
/// Transmits per `send_all` when forwarding.
const FORWARD_CHUNK: usize = 16;

/// `quinn-udp` over a std `UdpSocket`; see the module docs.
pub struct PortableBackend {
    socket: UdpSocket,
    state: UdpSocketState,
    v6: bool,
    /// DSCP (and default ECN) byte for every datagram.
    tos: u8,
    /// Set once the kernel refused a GSO send (Linux send path).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    gso_off: std::cell::Cell<bool>,
    gro_segments: usize,
    /// `BATCH_SIZE` receive slots of `SLOT` bytes.
    store: Box<[u8]>,
    metas: Box<[quinn_udp::RecvMeta; BATCH_SIZE]>,
    /// Slots filled by the last recvmmsg, and the next one to stage.
    filled: usize,
    next: usize,
    /// The batch being handed out.
    cur: Option<Staged>,
    /// What the forwarding callback chose for the current batch.
    fwd: Box<Forwards>,
    /// Forwarded datagrams not sent ([`Backend::forward_failures`]).
    fwd_failed: u64,
}

impl std::fmt::Debug for PortableBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableBackend")
            .field("local", &self.socket.local_addr().ok())
            .field("max_gso_segments", &self.state.max_gso_segments())
            .field("gro_segments", &self.gro_segments)
            .finish_non_exhaustive()
    }
}

impl PortableBackend {
    /// Binds a socket at `addr` with `cfg` (SO_REUSEPORT when `reuse_port`).
    pub fn bind(addr: SocketAddr, cfg: &Config, reuse_port: bool) -> io::Result<Self> {
        let socket: UdpSocket = crate::socket::open(addr, cfg, reuse_port)?.into();
        let state = UdpSocketState::new((&socket).into())?;
        let mut gro_segments = state.gro_segments();
        if !cfg.gro && gro_segments > 1 {
            disable_gro(&socket)?;
            gro_segments = 1;
        }
        Ok(Self {
            socket,
            state,
            v6: addr.is_ipv6(),
            tos: cfg.tos,
            gso_off: std::cell::Cell::new(false),
            gro_segments,
            store: vec![0u8; SLOT * BATCH_SIZE].into_boxed_slice(),
            metas: Box::new([quinn_udp::RecvMeta::default(); BATCH_SIZE]),
            filled: 0,
            next: 0,
            cur: None,
            fwd: Box::default(),
            fwd_failed: 0,
        })
    }

    /// One send. quinn-udp 0.6 writes an IP_TOS / IPV6_TCLASS control message holding only the
    /// ECN bits on every send, which overrides the socket's TOS and wipes DSCP EF; on Linux the
    /// same single `sendmsg` (GSO included) goes through our cmsg helper with the full byte.
    #[cfg(target_os = "linux")]
    fn try_send(&self, t: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        use std::os::fd::AsFd;
        let v6_tos = match t.destination {
            SocketAddr::V4(_) => false,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
        };
        let tos = (self.tos & !0b11) | t.ecn.map_or(0, |e| e as u8);
        let segment = t
            .segment_size
            .filter(|&s| s > 0 && s < t.contents.len())
            .map(|s| s as u16);
        let dst = socket2::SockAddr::from(t.destination);
        let fd = self.socket.as_fd();
        if let (Some(s), false) = (segment, self.gso_off.get()) {
            match crate::cmsg::send_msg(fd, &dst, t.contents, Some(s), v6_tos, tos) {
                // The egress device cannot do UDP GSO (no checksum offload): stop using it.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    tracing::info!(error = %e, "UDP GSO refused by the device; sending segments");
                    self.gso_off.set(true);
                }
                r => return r.map(drop),
            }
        }
        match segment {
            Some(s) => t
                .contents
                .chunks(usize::from(s))
                .try_for_each(|c| crate::cmsg::send_msg(fd, &dst, c, None, v6_tos, tos).map(drop)),
            None => crate::cmsg::send_msg(fd, &dst, t.contents, None, v6_tos, tos).map(drop),
        }
    }

    /// One send through quinn-udp (DSCP is lost there: see the Linux variant).
    #[cfg(not(target_os = "linux"))]
    fn try_send(&self, t: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        self.state.try_send((&self.socket).into(), t)
    }

    fn send_one(&self, t: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        let mut retried = false;
        loop {
            let r = match self.try_send(t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Socket buffer full: wait for room in blocking mode, then go back.
                    self.socket.set_nonblocking(false)?;
                    let r = self.try_send(t);
                    self.socket.set_nonblocking(true)?;
                    r
                }
                r => r,
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_icmp_error(&e) => {
                    drain_errors(&self.socket);
                    if retried {
                        return Ok(());
                    }
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Backend::send`], on a shared borrow (forwarding sends from `store` while it is lent).
    fn send_all(&self, transmits: &[Transmit<'_>]) -> io::Result<()> {
        let mut first_err = None;
        let gso = self.max_gso_segments() > 1;
        for t in transmits {
            let mut qt = quinn_udp::Transmit {
                destination: map_dst(t.dst, self.v6),
                ecn: t.ecn.map(to_quinn),
                contents: t.contents,
                segment_size: t.segment_size,
                src_ip: None,
            };
            let r = match t.segment_size {
                // No GSO here: send the segments one by one.
                Some(seg) if !gso && seg > 0 && t.contents.len() > seg => {
                    t.contents.chunks(seg).try_for_each(|c| {
                        qt.contents = c;
                        qt.segment_size = None;
                        self.send_one(&qt)
                    })
                }
                _ => self.send_one(&qt),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends what the forwarding callback chose for the batch at `store[off..end]`, up to
    /// [`FORWARD_CHUNK`] transmits per call, straight from the receive slot.
    fn send_forwards(&mut self, off: usize, end: usize) {
        let batch = &self.store[off..end];
        self.fwd_failed += self.fwd.out_of_bounds(batch.len()) as u64;
        let blank = Transmit {
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            segment_size: None,
            ecn: None,
            contents: &[],
        };
        let mut tx = [blank; FORWARD_CHUNK];
        let mut counts = [0usize; FORWARD_CHUNK];
        let mut n = 0;
        let mut runs = self
            .fwd
            .runs(batch.len(), self.max_gso_segments())
            .peekable();
        while let Some(r) = runs.next() {
            tx[n] = Transmit {
                dst: r.dst,
                segment_size: (r.count > 1).then_some(r.seg),
                ecn: None,
                contents: &batch[r.start..r.start + r.len],
            };
            counts[n] = r.count;
            n += 1;
            if n == FORWARD_CHUNK || runs.peek().is_none() {
                if let Err(e) = self.send_all(&tx[..n]) {
                    tracing::debug!(error = %e, "forward send failed");
                    self.fwd_failed += counts[..n].iter().sum::<usize>() as u64;
                }
                n = 0;
            }
        }
    }

    /// The next batch of the last recvmmsg, if any is left.
    fn stage_next(&mut self) -> Option<Staged> {
        if self.next >= self.filled {
            return None;
        }
        let m = &self.metas[self.next];
        let off = self.next * SLOT;
        self.next += 1;
        Some(Staged {
            src: canonical(m.addr),
            dst_ip: m.dst_ip.map(|ip| ip.to_canonical()),
            ecn: m.ecn.map(from_quinn),
            stride: m.stride,
            off,
            end: off + m.len,
        })
    }

    /// Refills the slots with one recvmmsg, waiting until `deadline`; false on timeout.
    /// ICMP-induced errors are drained and skipped.
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            let mut chunks = self.store.chunks_mut(SLOT);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            match self
                .state
                .recv((&self.socket).into(), &mut iovs, &mut self.metas[..])
            {
                Ok(k) => {
                    self.filled = k;
                    self.next = 0;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait_readable(deadline)? {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_icmp_error(&e) => {
                    drain_errors(&self.socket);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until a datagram (or a pending socket error) is readable; false on timeout.
    fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let remaining = match deadline {
            Some(d) => {
                let r = d.saturating_duration_since(Instant::now());
                if r.is_zero() {
                    return Ok(false);
                }
                Some(r.max(Duration::from_micros(1)))
            }
            None => None,
        };
        self.socket.set_nonblocking(false)?;
        self.socket.set_read_timeout(remaining)?;
        let r = self.socket.peek(&mut [0u8; 1]);
        self.socket.set_nonblocking(true)?;
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            // Data, a cut peek (Windows reports WSAEMSGSIZE), or a pending error: let recv see.
            _ => Ok(true),
        }
    }
}

#[cfg(target_os = "linux")]
fn disable_gro(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::AsFd;
    crate::cmsg::set_int(socket.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 0)
}

#[cfg(not(target_os = "linux"))]
fn disable_gro(_socket: &UdpSocket) -> io::Result<()> {
    Ok(())
}

fn to_quinn(e: Ecn) -> EcnCodepoint {
    match e {
        Ecn::Ect0 => EcnCodepoint::Ect0,
        Ecn::Ect1 => EcnCodepoint::Ect1,
        Ecn::Ce => EcnCodepoint::Ce,
    }
}

fn from_quinn(e: EcnCodepoint) -> Ecn {
    match e {
        EcnCodepoint::Ect0 => Ecn::Ect0,
        EcnCodepoint::Ect1 => Ecn::Ect1,
        EcnCodepoint::Ce => Ecn::Ce,
    }
}

impl Backend for PortableBackend {
    fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<()> {
        self.send_all(transmits)
    }

    fn recv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let n = bufs.len().min(meta.len());
        if n == 0 {
            return Ok(0);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut done = 0;
            while done < n {
                let Some(mut cur) = self.cur.take().or_else(|| self.stage_next()) else {
                    break;
                };
                meta[done] = cur.deliver(&self.store, &mut bufs[done]);
                done += 1;
                if !cur.is_done() {
                    self.cur = Some(cur);
                }
            }
            if done > 0 {
                return Ok(done);
            }
            if !self.fill(deadline)? {
                return Ok(0);
            }
        }
    }

    fn recv_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8]),
    ) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut done = 0;
            while let Some(mut cur) = self.cur.take().or_else(|| self.stage_next()) {
                let (off, end) = (cur.off, cur.end);
                f(&cur.take_all(), &mut self.store[off..end]);
                done += 1;
            }
            if done > 0 {
                return Ok(done);
            }
            if !self.fill(deadline)? {
                return Ok(0);
            }
        }
    }

    fn forward_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8], &mut Forwards),
    ) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut done = 0;
            while let Some(mut cur) = self.cur.take().or_else(|| self.stage_next()) {
                let (off, end) = (cur.off, cur.end);
                self.fwd.clear();
                f(&cur.take_all(), &mut self.store[off..end], &mut self.fwd);
                done += 1;
                self.send_forwards(off, end);
            }
            if done > 0 {
                return Ok(done);
            }
            if !self.fill(deadline)? {
                return Ok(0);
            }
        }
    }

    fn forward_failures(&self) -> u64 {
        self.fwd_failed
    }

    fn max_gso_segments(&self) -> usize {
        if self.gso_off.get() {
            1
        } else {
            self.state.max_gso_segments()
        }
    }

    fn gro_segments(&self) -> usize {
        self.gro_segments
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Portable
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for PortableBackend {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
