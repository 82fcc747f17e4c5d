//! io_uring backend (Linux): provided-buffer ring, multishot `RecvMsg` with UDP_GRO, batched
//! `SendMsg` with UDP_SEGMENT (GSO), optional zero-copy sends. One ring per socket.
//!
//! Receive: one multishot `RecvMsgMulti` stays armed; each completion names a ring buffer that
//! holds `io_uring_recvmsg_out`, the source address, the control messages (GRO size, packet info,
//! TOS) and the payload. We copy the payload out to the caller's buffers and give the ring buffer
//! back. When a completion lacks `F_MORE` (buffers ran dry, CQ overflow, an ICMP error) the
//! request has ended and is re-armed on the next call.
//!
//! Send: a batch becomes one `SendMsg` per transmit, submitted with a single `io_uring_enter`
//! that also waits for their completions, so the caller's buffers are free again on return.
//!
//! Forward ([`forward`]): what a forwarder's callback chose goes out from the receive buffers
//! themselves, without waiting; [`slot`] holds the prepared `sendmsg` both paths use, and
//! [`probe`](mod@probe) decides whether this machine can run the backend at all.
//!
//! Threading: one thread drives a backend at a time (`&mut self`); it may move between threads.
//! The ring uses COOP_TASKRUN, so completions appear when the driving thread enters the kernel.
//! Dropping the backend cancels the multishot receive and waits for its last completion before
//! the buffer memory is unmapped.

mod bufring;
mod forward;
mod probe;
mod slot;

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use io_uring::types::{RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use socket2::Socket;

use self::bufring::BufRing;
use self::forward::Forwarding;
pub(crate) use self::probe::probe;
use self::slot::SendSlot;
use crate::cmsg::{self, CONTROL_LEN};

use crate::deliver::Staged;
use crate::socket::{drain_errors, log_err};
use crate::{
    Backend, BackendKind, Config, Forwards, MAX_UDP_PAYLOAD, RecvMeta, Transmit, is_icmp_error,
};

const TAG_MASK: u64 = 7 << 61;
const RECV_TAG: u64 = 1 << 61;
const SEND_TAG: u64 = 2 << 61;
const CANCEL_TAG: u64 = 3 << 61;
/// A forward send from a receive buffer (slot index in the low bits).
const FWD_TAG: u64 = 4 << 61;
/// Transmits prepared per submission; also bounds the in-flight sends.
const SEND_SLOTS: usize = 64;
/// Forward sends in flight at most (each holds its receive buffer until it completes).
const FWD_SLOTS: usize = 512;
/// Bytes of the arena that single forwarded datagrams are copied into.
const COPY_ARENA: usize = 1 << 20;
/// Most sends queued in that arena.
const COPY_RUNS: usize = 2048;
const SQ_ENTRIES: u32 = 256;
/// Bound on batches one `recv_with` call hands out, so a busy socket cannot starve the caller.
const MAX_BATCHES_PER_CALL: usize = 256;
const BGID: u16 = 0;
/// `struct io_uring_recvmsg_out` at the start of each receive buffer.
const RECVMSG_OUT_LEN: usize = 16;
const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();
/// `io_uring_recvmsg_out` + name + control + the largest UDP payload / GRO batch.
const BUF_SIZE: usize = PAYLOAD_OFFSET + (1 << 16);
/// Control space of the multishot receive: GRO size, packet info and TOS fit in 88 bytes
/// (IPv6), and this length puts the payload on a 64-byte boundary of each ring buffer, so the
/// copy out starts cache-line aligned (no measurable difference on loopback here; cheap).
const RECV_CONTROL_LEN: usize = 112;
/// Where the payload starts in a ring buffer: `io_uring_recvmsg_out`, name, control.
const PAYLOAD_OFFSET: usize = RECVMSG_OUT_LEN + NAME_LEN + RECV_CONTROL_LEN;
/// Kernel limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most segments the kernel coalesces into one GRO receive.
const GRO_SEGMENTS: usize = 64;

/// A completion kept for later (a receive seen while waiting for sends).
#[derive(Debug, Clone, Copy)]
struct Cqe {
    user_data: u64,
    result: i32,
    flags: u32,
}

impl From<cqueue::Entry> for Cqe {
    fn from(e: cqueue::Entry) -> Self {
        Self {
            user_data: e.user_data(),
            result: e.result(),
            flags: e.flags(),
        }
    }
}

/// The io_uring backend; see the module docs for the threading rule.
#[allow(clippy::struct_excessive_bools)] // independent state flags, not a mode enum
pub struct UringBackend {
    // Field order is drop order: the ring goes before the buffers it may write into.
    ring: IoUring,
    bufs: BufRing,
    socket: Socket,
    /// Template of the multishot receive (only namelen/controllen matter); stable address.
    recv_hdr: Box<libc::msghdr>,
    slots: Box<[SendSlot]>,
    fwd: Forwarding,
    /// Receive completions reaped while waiting for sends.
    stash: VecDeque<Cqe>,
    /// The ring buffer being handed out, and what is left of it.
    cur: Option<(u16, Staged)>,
    /// A receive error seen after part of a batch was delivered; returned by the next call.
    pending_err: Option<io::Error>,
    armed: bool,
    v6: bool,
    gso: bool,
    gro: bool,
    send_zc: bool,
    tos: u8,
    local: SocketAddr,
}

// SAFETY: the raw pointers inside `recv_hdr` and `slots` point into heap memory this value owns
// (or, during `send`, at caller data that outlives the call); none of it is shared with another
// Rust value, so moving the backend to another thread moves sole ownership.
unsafe impl Send for UringBackend {}

impl std::fmt::Debug for UringBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBackend")
            .field("local", &self.local)
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .field("send_zc", &self.send_zc)
            .field("bufs", &self.bufs)
            .finish_non_exhaustive()
    }
}

/// Builds a ring with COOP_TASKRUN | TASKRUN_FLAG (completions are produced when our thread
/// enters the kernel, no interrupts), falling back to a plain ring.
///
/// SINGLE_ISSUER | DEFER_TASKRUN measured the same here (within noise, `wavry-bench net`) but
/// ties the ring to one thread for good (a drop on another thread could not cancel the
/// multishot receive), so it is not used.
fn build_ring(cq_entries: u32) -> io::Result<IoUring> {
    let cq = cq_entries.max(4096).next_power_of_two();
    match IoUring::builder()
        .setup_cqsize(cq)
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(SQ_ENTRIES)
    {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::debug!(error = %e, "COOP_TASKRUN ring setup failed; using a plain ring");
            IoUring::builder().setup_cqsize(cq).build(SQ_ENTRIES)
        }
    }
}

impl UringBackend {
    /// Binds a socket at `addr` with `cfg` (SO_REUSEPORT when `reuse_port`) and builds its ring.
    pub fn bind(addr: SocketAddr, cfg: &Config, reuse_port: bool) -> io::Result<Self> {
        let socket = crate::socket::open(addr, cfg, reuse_port)?;
        Self::from_socket(socket, cfg)
    }

    /// Builds the ring for an already bound, configured socket.
    pub(crate) fn from_socket(socket: Socket, cfg: &Config) -> io::Result<Self> {
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
        let v6 = local.is_ipv6();
        let dual = v6 && local.ip().is_unspecified();
        let fd = socket.as_fd();
        if !v6 || dual {
            log_err(
                cmsg::set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1),
                "IP_PKTINFO",
            );
            log_err(
                cmsg::set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1),
                "IP_RECVTOS",
            );
        }
        if v6 {
            log_err(
                cmsg::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1),
                "IPV6_RECVPKTINFO",
            );
            log_err(
                cmsg::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1),
                "IPV6_RECVTCLASS",
            );
        }
        let gro = cfg.gro && cmsg::set_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        let gso = cmsg::gso_supported(fd);
        let ring = build_ring(cfg.uring_cq_entries)?;
        let bufs = BufRing::new(&ring, cfg.uring_buffers, BGID, BUF_SIZE)?;
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        recv_hdr.msg_controllen = RECV_CONTROL_LEN as _;
        let slots = (0..SEND_SLOTS).map(|_| SendSlot::new(local)).collect();
        let fwd = Forwarding::new(local, bufs.entries());
        let stash = VecDeque::with_capacity(usize::from(cfg.uring_buffers.max(1)) * 2 + 64);
        Ok(Self {
            ring,
            bufs,
            socket,
            recv_hdr,
            slots,
            fwd,
            stash,
            cur: None,
            pending_err: None,
            armed: false,
            v6,
            gso,
            gro,
            send_zc: cfg.send_zc,
            tos: cfg.tos,
            local,
        })
    }

    /// Queues one SQE, flushing the SQ to the kernel first if it is full.
    fn push_sqe(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every SQE we build points only at memory that stays valid and untouched
            // until its final completion is reaped: the boxed `recv_hdr` (lives as long as the
            // ring), a send slot plus the caller's payload (`send` waits for the completions
            // before returning), or nothing (cancel).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm(&mut self) -> io::Result<()> {
        let e = opcode::RecvMsgMulti::new(
            types::Fd(self.socket.as_raw_fd()),
            &raw const *self.recv_hdr,
            BGID,
        )
        .build()
        .user_data(RECV_TAG);
        self.push_sqe(&e)?;
        self.armed = true;
        Ok(())
    }

    /// Handles a receive completion: stages its buffer in `self.cur` or deals with the error.
    fn on_recv(&mut self, c: Cqe) -> io::Result<()> {
        if !cqueue::more(c.flags) {
            self.armed = false;
        }
        if c.result < 0 {
            let e = io::Error::from_raw_os_error(-c.result);
            return match -c.result {
                // Ring ran dry (post more buffers), cancelled, or interrupted: re-armed by the
                // caller.
                libc::ENOBUFS => {
                    self.bufs.ran_dry();
                    Ok(())
                }
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => Ok(()),
                _ if is_icmp_error(&e) => {
                    drain_errors(&self.socket);
                    Ok(())
                }
                _ => Err(e),
            };
        }
        let Some(bid) = cqueue::buffer_select(c.flags) else {
            return Err(io::Error::other("receive completion without a buffer"));
        };
        let len = c.result as usize;
        self.bufs.taken(bid, len);
        let buf = self.bufs.buf(bid, len);
        let Ok(out) = RecvMsgOut::parse(buf, &self.recv_hdr) else {
            self.bufs.push(bid);
            return Err(io::Error::other("malformed io_uring_recvmsg_out"));
        };
        let payload = out.payload_data();
        let off = payload.as_ptr() as usize - buf.as_ptr() as usize;
        let info = cmsg::decode(out.control_data());
        debug_assert!(
            !out.is_payload_truncated(),
            "ring buffers hold any datagram"
        );
        let Some(src) = cmsg::decode_sockaddr(out.name_data()) else {
            self.bufs.push(bid);
            return Ok(());
        };
        let staged = Staged {
            src,
            dst_ip: info.dst_ip,
            ecn: info.ecn,
            stride: info.gro_size.unwrap_or(payload.len()),
            off,
            end: off + payload.len(),
        };
        // An empty datagram stays staged too: it is reported with `len == 0`.
        self.cur = Some((bid, staged));
        Ok(())
    }

    /// Waits for at least one completion until `deadline`; false when it passed.
    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        let r = match deadline {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let rem = d.saturating_duration_since(Instant::now());
                if rem.is_zero() {
                    // A poll, not a wait: arming a zero timeout costs a timer in
                    // io_cqring_wait. Enter the kernel only when it holds completions for us
                    // (TASKRUN flag) or SQEs wait; the caller then looks at the CQ once more.
                    let pending = {
                        let sq = self.ring.submission();
                        sq.taskrun() || !sq.is_empty()
                    };
                    if pending {
                        match self.ring.submit() {
                            Ok(_) => {}
                            Err(e)
                                if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(false);
                }
                let ts = Timespec::from(rem);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Submits and waits for `want` completions. Transient errors (interrupted, CQ overflow
    /// backlog, momentary kernel memory pressure) return `Ok` so the caller reaps what is there
    /// and loops; EBADF/EFAULT/EINVAL are a bug in this module and come back as errors.
    pub(super) fn submit_and_wait_through(&mut self, want: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(want) {
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ENOMEM)
                ) =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Fills slot `i` for one datagram (or GSO batch) to `dst`.
    fn prepare(&mut self, i: usize, t: &Transmit<'_>, contents: &[u8], seg: Option<usize>) {
        let tos = t.ecn.map(|ecn| (self.tos & !0b11) | ecn as u8);
        self.slots[i].fill(t.dst, self.v6, contents, seg, tos);
    }

    fn submit_slot(&mut self, i: usize) -> io::Result<()> {
        let fd = types::Fd(self.socket.as_raw_fd());
        let hdr = &raw const self.slots[i].hdr;
        let e = if self.send_zc {
            opcode::SendMsgZc::new(fd, hdr).build()
        } else {
            opcode::SendMsg::new(fd, hdr).build()
        };
        self.push_sqe(&e.user_data(SEND_TAG | i as u64))
    }

    /// Submits slots `0..n` and waits until each has completed (zero-copy notifications
    /// included); transient ICMP errors are retried once.
    fn flush_slots(&mut self, n: usize, first_err: &mut Option<io::Error>) -> io::Result<()> {
        for i in 0..n {
            self.submit_slot(i)?;
        }
        let mut inflight = n;
        let mut notifs = 0usize;
        let mut retried = 0u64;
        while inflight + notifs > 0 {
            // Keep waiting through transient errors: the caller's payloads must stay borrowed
            // until every send has completed.
            self.submit_and_wait_through(inflight + notifs)?;
            let mut resend = 0u64;
            for e in self.ring.completion() {
                let c = Cqe::from(e);
                match c.user_data & TAG_MASK {
                    SEND_TAG => {
                        let i = (c.user_data & 0xffff) as usize;
                        if cqueue::notif(c.flags) {
                            notifs -= 1;
                            continue;
                        }
                        if cqueue::more(c.flags) {
                            notifs += 1;
                        }
                        inflight -= 1;
                        if c.result < 0 {
                            let err = io::Error::from_raw_os_error(-c.result);
                            if matches!(-c.result, libc::EINTR | libc::EAGAIN) {
                                resend |= 1 << i;
                            } else if is_icmp_error(&err) {
                                if retried & (1 << i) == 0 {
                                    retried |= 1 << i;
                                    resend |= 1 << i;
                                }
                            } else {
                                if self.slots[i].gso && -c.result == libc::EIO && self.gso {
                                    // The egress device cannot do UDP GSO: callers see
                                    // max_gso_segments() == 1 from now on.
                                    tracing::info!(error = %err, "UDP GSO refused; disabled");
                                    self.gso = false;
                                }
                                if first_err.is_none() {
                                    *first_err = Some(err);
                                }
                            }
                        }
                    }
                    RECV_TAG => self.stash.push_back(c),
                    FWD_TAG => self
                        .fwd
                        .complete(c, &mut self.bufs, &self.socket, &mut self.gso),
                    _ => {}
                }
            }
            if resend != 0 {
                drain_errors(&self.socket);
                for i in 0..SEND_SLOTS {
                    if resend & (1 << i) != 0 {
                        self.submit_slot(i)?;
                        inflight += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The next receive completion: one stashed during a send first, then the CQ.
    fn next_recv_cqe(&mut self) -> Option<Cqe> {
        loop {
            let c = match self.stash.pop_front() {
                Some(c) => c,
                None => self.ring.completion().next().map(Cqe::from)?,
            };
            match c.user_data & TAG_MASK {
                RECV_TAG => return Some(c),
                FWD_TAG => self
                    .fwd
                    .complete(c, &mut self.bufs, &self.socket, &mut self.gso),
                _ => {}
            }
        }
    }

    /// Takes every completion off the CQ: receives to the stash, forward sends completed.
    fn reap(&mut self) {
        for e in self.ring.completion() {
            let c = Cqe::from(e);
            match c.user_data & TAG_MASK {
                RECV_TAG => self.stash.push_back(c),
                FWD_TAG => self
                    .fwd
                    .complete(c, &mut self.bufs, &self.socket, &mut self.gso),
                _ => {}
            }
        }
    }

    /// The borrowed receive loop of [`Backend::recv_with`] and [`Backend::forward_with`]:
    /// hands each staged batch (its buffer id and place) to `batch`, which owns the buffer from
    /// then on, up to [`MAX_BATCHES_PER_CALL`] per pass; runs `end_of_pass` after each pass;
    /// waits until `timeout` for the first batch. Returns the number of batches.
    fn pump(
        &mut self,
        timeout: Option<Duration>,
        batch: &mut dyn FnMut(&mut Self, u16, Staged) -> io::Result<()>,
        end_of_pass: &mut dyn FnMut(&mut Self) -> io::Result<()>,
    ) -> io::Result<usize> {
        if let Some(e) = self.pending_err.take() {
            return Err(e);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut expired = false;
        loop {
            let mut done = 0;
            let mut err = None;
            while done < MAX_BATCHES_PER_CALL {
                if let Some((bid, st)) = self.cur.take() {
                    done += 1;
                    if let Err(e) = batch(self, bid, st) {
                        err = Some(e);
                        break;
                    }
                    continue;
                }
                let Some(c) = self.next_recv_cqe() else { break };
                if let Err(e) = self.on_recv(c) {
                    err = Some(e);
                    break;
                }
            }
            if let Err(e) = end_of_pass(self) {
                err.get_or_insert(e);
            }
            if let Some(r) = self.after_batch(done, err, expired)? {
                return Ok(r);
            }
            expired = !self.wait(deadline)?;
        }
    }

    /// Common tail of a receive pass: give buffers back, re-arm, and decide whether to return
    /// (`Some(count)`) or wait. An error after some batches were delivered is kept for the next
    /// call, so nothing delivered is lost and the error is not either.
    fn after_batch(
        &mut self,
        done: usize,
        err: Option<io::Error>,
        expired: bool,
    ) -> io::Result<Option<usize>> {
        self.bufs.publish();
        if let Some(e) = err {
            if done == 0 {
                return Err(e);
            }
            self.pending_err = Some(e);
            return Ok(Some(done));
        }
        if !self.armed {
            self.arm()?;
        }
        Ok((done > 0 || expired).then_some(done))
    }

    /// Ends the multishot receive and waits for its last completion, so the kernel no longer
    /// writes into the buffer ring.
    fn shutdown(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        // Forward sends read from the receive buffers: let them finish first.
        while self.fwd.inflight > 0 {
            if !self.wait(Some(deadline))? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "forward sends did not complete",
                ));
            }
            self.reap();
        }
        if !self.armed {
            return Ok(());
        }
        let e = opcode::AsyncCancel::new(RECV_TAG)
            .build()
            .user_data(CANCEL_TAG);
        self.push_sqe(&e)?;
        while self.armed {
            if !self.wait(Some(deadline))? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "multishot receive did not end",
                ));
            }
            for e in self.ring.completion() {
                let c = Cqe::from(e);
                if c.user_data & TAG_MASK == RECV_TAG && !cqueue::more(c.flags) {
                    self.armed = false;
                }
            }
        }
        Ok(())
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            // Memory safety first: keep the buffers mapped for the rest of the process.
            tracing::warn!(error = %e, "io_uring teardown failed; leaking its receive buffers");
            self.bufs.leak();
        }
    }
}

impl Backend for UringBackend {
    fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<()> {
        let mut first_err = None;
        let mut n = 0;
        for t in transmits {
            if t.contents.len() > MAX_UDP_PAYLOAD {
                first_err.get_or_insert_with(|| io::Error::from_raw_os_error(libc::EMSGSIZE));
                continue;
            }
            let seg = t.segment_size.filter(|&s| s > 0 && s < t.contents.len());
            match seg {
                Some(s) if !self.gso => {
                    // No GSO here: one sendmsg per segment.
                    for c in t.contents.chunks(s) {
                        self.prepare(n, t, c, None);
                        n += 1;
                        if n == SEND_SLOTS {
                            self.flush_slots(n, &mut first_err)?;
                            n = 0;
                        }
                    }
                }
                _ => {
                    self.prepare(n, t, t.contents, seg);
                    n += 1;
                    if n == SEND_SLOTS {
                        self.flush_slots(n, &mut first_err)?;
                        n = 0;
                    }
                }
            }
        }
        if n > 0 {
            self.flush_slots(n, &mut first_err)?;
        }
        first_err.map_or(Ok(()), Err)
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
        if let Some(e) = self.pending_err.take() {
            return Err(e);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut expired = false;
        loop {
            let mut done = 0;
            let mut err = None;
            while done < n {
                if let Some((bid, mut st)) = self.cur.take() {
                    meta[done] = st.deliver(self.bufs.buf(bid, st.end), &mut bufs[done]);
                    done += 1;
                    if st.is_done() {
                        self.bufs.push(bid);
                    } else {
                        self.cur = Some((bid, st));
                    }
                    continue;
                }
                let Some(c) = self.next_recv_cqe() else { break };
                if let Err(e) = self.on_recv(c) {
                    err = Some(e);
                    break;
                }
            }
            if let Some(r) = self.after_batch(done, err, expired)? {
                return Ok(r);
            }
            // One more look at the CQ after the deadline, then give up.
            expired = !self.wait(deadline)?;
        }
    }

    fn recv_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8]),
    ) -> io::Result<usize> {
        self.pump(
            timeout,
            &mut |this, bid, mut st| {
                let (off, end) = (st.off, st.end);
                let data = this.bufs.buf_mut(bid, end);
                f(&st.take_all(), &mut data[off..end]);
                this.bufs.push(bid);
                Ok(())
            },
            &mut |_| Ok(()),
        )
    }

    fn forward_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(&RecvMeta, &mut [u8], &mut Forwards),
    ) -> io::Result<usize> {
        self.pump(
            timeout,
            &mut |this, bid, mut st| {
                let (off, end) = (st.off, st.end);
                let meta = st.take_all();
                let data = this.bufs.buf_mut(bid, end);
                this.fwd.choice.clear();
                f(&meta, &mut data[off..end], &mut this.fwd.choice);
                this.queue_forwards(bid, off, end)?;
                // Sends hold their buffers: once they hold half of what the ring should have
                // posted, send and take the buffers back before the receive runs dry (single
                // datagrams fill a buffer each).
                if this.fwd.held * 2 >= this.bufs.target() {
                    this.submit_forwards()?;
                    this.reap();
                    this.bufs.publish();
                }
                Ok(())
            },
            // One submission for every send the pass queued; no waiting for the zero-copy ones.
            &mut |this| {
                this.flush_copies();
                this.submit_forwards()
            },
        )
    }

    fn forward_failures(&self) -> u64 {
        self.fwd.failed
    }

    fn max_gso_segments(&self) -> usize {
        if self.gso { MAX_GSO_SEGMENTS } else { 1 }
    }

    fn gro_segments(&self) -> usize {
        if self.gro { GRO_SEGMENTS } else { 1 }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn recv_buffer_stalls(&self) -> u64 {
        self.bufs.dry_runs()
    }
}

/// Sanity: the receive buffer layout the kernel writes must fit our buffers.
const _: () = assert!(BUF_SIZE >= PAYLOAD_OFFSET + MAX_UDP_PAYLOAD);
const _: () = assert!(PAYLOAD_OFFSET % 64 == 0 && RECV_CONTROL_LEN <= CONTROL_LEN);

impl AsFd for UringBackend {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
