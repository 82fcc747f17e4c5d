//! Forwarding from the receive buffers ([`crate::Backend::forward_with`]): the sends in flight,
//! which receive buffer each holds, and how the callback's choice becomes GSO runs straight
//! from a buffer or, for lone datagrams, copies joined into runs across receives.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types};
use socket2::Socket;

use super::bufring::BufRing;
use super::slot::SendSlot;
use super::{COPY_ARENA, COPY_RUNS, Cqe, FWD_SLOTS, FWD_TAG, MAX_GSO_SEGMENTS, UringBackend};
use crate::socket::drain_errors;
use crate::{Backend, Forwards, SendQueue, is_icmp_error};

/// Forward sends in flight: their slots, and which receive buffer each holds.
pub(super) struct Forwarding {
    pub(super) slots: Box<[SendSlot]>,
    /// Free slot indices.
    pub(super) free: Vec<u16>,
    /// Per slot: the receive buffer it sends from, and its datagrams.
    pub(super) owner: Box<[(u16, u32)]>,
    /// Per receive buffer: forward sends in flight from it; it goes back to the ring at 0.
    pub(super) refs: Box<[u16]>,
    /// Receive buffers held by forward sends in flight.
    pub(super) held: u16,
    pub(super) inflight: usize,
    /// Datagrams whose forward send failed.
    pub(super) failed: u64,
    /// What the callback chose for the batch being handled.
    pub(super) choice: Box<Forwards>,
    /// Forward SQEs pushed and not yet submitted.
    pub(super) unsubmitted: bool,
    /// Single datagrams to forward, copied (see [`UringBackend::queue_forwards`]); `None`
    /// only while it is being flushed.
    pub(super) copies: Option<Box<SendQueue>>,
}

impl Forwarding {
    pub(super) fn new(local: SocketAddr, buffers: usize) -> Self {
        Self {
            slots: (0..FWD_SLOTS).map(|_| SendSlot::new(local)).collect(),
            free: (0..FWD_SLOTS as u16).rev().collect(),
            owner: vec![(0, 0); FWD_SLOTS].into_boxed_slice(),
            refs: vec![0; buffers].into_boxed_slice(),
            held: 0,
            inflight: 0,
            failed: 0,
            choice: Box::default(),
            unsubmitted: false,
            copies: Some(Box::new(SendQueue::new(
                MAX_GSO_SEGMENTS,
                COPY_ARENA,
                COPY_RUNS,
            ))),
        }
    }

    /// Takes a reference on receive buffer `bid` (a send from it, or the batch being queued).
    pub(super) fn retain(&mut self, bid: u16) {
        let r = &mut self.refs[usize::from(bid)];
        if *r == 0 {
            self.held += 1;
        }
        *r += 1;
    }

    /// Drops a reference on `bid`; the last one gives the buffer back to the ring.
    pub(super) fn release(&mut self, bid: u16, bufs: &mut BufRing) {
        let r = &mut self.refs[usize::from(bid)];
        *r -= 1;
        if *r == 0 {
            self.held -= 1;
            bufs.push(bid);
        }
    }

    /// Handles a forward send's completion: frees its slot and, with its last send, gives
    /// its receive buffer back. Clears `gso` when the device refused a GSO send (EIO).
    pub(super) fn complete(&mut self, c: Cqe, bufs: &mut BufRing, socket: &Socket, gso: &mut bool) {
        let i = (c.user_data & 0xffff) as usize;
        let (bid, count) = self.owner[i];
        self.free.push(i as u16);
        self.inflight -= 1;
        self.release(bid, bufs);
        if c.result >= 0 {
            return;
        }
        self.failed += u64::from(count);
        let err = io::Error::from_raw_os_error(-c.result);
        if is_icmp_error(&err) {
            drain_errors(socket);
        } else {
            tracing::debug!(error = %err, "forward send failed");
        }
        if -c.result == libc::EIO && self.slots[i].gso && *gso {
            tracing::info!(error = %err, "UDP GSO refused; disabled");
            *gso = false;
        }
    }
}

impl UringBackend {
    /// Submits the forward sends queued and not yet submitted (no wait).
    pub(super) fn submit_forwards(&mut self) -> io::Result<()> {
        if !self.fwd.unsubmitted {
            return Ok(());
        }
        self.fwd.unsubmitted = false;
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A free forward slot; when all are in flight, submits and waits until one completes.
    pub(super) fn fwd_slot(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = self.fwd.free.pop() {
                return Ok(usize::from(i));
            }
            self.submit_and_wait_through(1)?;
            self.fwd.unsubmitted = false;
            self.reap();
        }
    }

    /// Queues the sends the forwarding callback chose for the batch at `off..end` of receive
    /// buffer `bid`. A GSO run goes straight from that buffer, which goes back to the ring when
    /// the last of its sends completes. A lone datagram (single datagrams from many flows) is
    /// copied into [`Forwarding::copies`] instead: the copy is cheap, frees the buffer at once,
    /// and joins datagrams of other batches to the same peer into GSO runs. Copies go out
    /// before the next zero-copy send and at the end of the pass, so order is kept.
    pub(super) fn queue_forwards(&mut self, bid: u16, off: usize, end: usize) -> io::Result<()> {
        let batch_len = end - off;
        self.fwd.failed += self.fwd.choice.out_of_bounds(batch_len) as u64;
        // Held while its sends are queued: completions reaped meanwhile (a full slot pool,
        // copies flushed) must not give it back before the last send from it is queued.
        self.fwd.retain(bid);
        let queued = self.queue_runs(bid, off, end);
        self.fwd.release(bid, &mut self.bufs);
        queued
    }

    /// The body of [`Self::queue_forwards`], while it holds the buffer.
    pub(super) fn queue_runs(&mut self, bid: u16, off: usize, end: usize) -> io::Result<()> {
        let batch_len = end - off;
        let max = self.max_gso_segments();
        let fd = types::Fd(self.socket.as_raw_fd());
        let mut at = 0;
        while let Some(r) = self.fwd.choice.next_run(&mut at, batch_len, max) {
            let from = off + r.start;
            if r.count == 1 {
                let bytes = &self.bufs.buf(bid, end)[from..from + r.len];
                if let Some(q) = self.fwd.copies.as_mut()
                    && q.push(r.dst, bytes)
                {
                    continue;
                }
            }
            self.flush_copies();
            let i = self.fwd_slot()?;
            let contents = &self.bufs.buf(bid, end)[from..from + r.len];
            let seg = (r.count > 1).then_some(r.seg);
            self.fwd.slots[i].fill(r.dst, self.v6, contents, seg, None);
            self.fwd.owner[i] = (bid, r.count as u32);
            self.fwd.retain(bid);
            self.fwd.inflight += 1;
            let e = opcode::SendMsg::new(fd, &raw const self.fwd.slots[i].hdr)
                .build()
                .user_data(FWD_TAG | i as u64);
            self.push_sqe(&e)?;
            self.fwd.unsubmitted = true;
        }
        Ok(())
    }

    /// Sends the copied forwards (and submits every queued SQE), waiting for the copies only.
    pub(super) fn flush_copies(&mut self) {
        let Some(mut q) = self.fwd.copies.take() else {
            return;
        };
        if !q.is_empty() {
            q.set_max_segments(self.max_gso_segments());
            self.fwd.failed += q.flush(self);
            self.fwd.unsubmitted = false;
        }
        self.fwd.copies = Some(q);
    }
}
