//! The receiving half: frame reassembly with Reed-Solomon repair, the deadline (jitter) buffer
//! that emits frames in order and drops late ones instead of queueing behind them, loss
//! detection with NACKs, reliable-channel de-duplication and acknowledgement, and the
//! transport feedback that drives the peer's congestion control and FEC.
//!
//! Concerns live in submodules: `slot` (a frame under reassembly), `reassembly` (chunks
//! into slots), `fec_repair` (parity and the rebuilding of lost chunks), `playout` (the
//! deadline buffer), `budget` (the frame buffers' byte budget), `loss` (gaps in packet ids
//! and the NACKs that ask for them) and `feedback` (the transport feedback report).

mod budget;
mod fec_repair;
mod feedback;
mod loss;
mod playout;
mod reassembly;
mod slot;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use self::{feedback::Acc, slot::Slot};
use super::{SessionConfig, pool::BufPool};
use crate::{fec::FecCodec, replay::ReplayWindow};
pub use budget::frame_budget;
pub use fec_repair::MAX_HELD_PARITY;

const SLOTS: usize = 16;

const MAX_CHUNKS: usize = 4096;

/// Missing packet ids tracked for NACKs. A forward jump in packet id larger than this is
/// counted as lost in one step: only its newest gaps are tracked (a jump to 2^62 costs no
/// more than one of 512).
const MAX_MISSING: usize = 512;

const MAX_ACKS: usize = 64;

const MAX_FRAME_LOSSES: usize = 32;

/// Receiver state.
#[derive(Debug)]
pub(crate) struct Receiver {
    acc: Acc,
    next_feedback: Option<Instant>,
    expected: u64,
    missing: VecDeque<(u64, Instant, u8)>,
    reliable: ReplayWindow,
    slots: Vec<Slot>,
    next_emit: Option<u64>,
    /// min(arrival − sender timestamp), µs, relative to `epoch`.
    offset_us: Option<i128>,
    epoch: Option<Instant>,
    frame_interval: Duration,
    slack: Duration,
    pool: BufPool,
    frame_pool: Vec<Vec<u8>>,
    fec: FecCodec,
    /// Shard bytes rebuilt for a repair (reused).
    scratch: Vec<u8>,
    last_kf_request: Option<Instant>,
    jitter_us: f64,
    last_transit_us: Option<i128>,
    max_frame: usize,
    /// Most bytes of frame buffers (under assembly or pooled) this receiver holds.
    frame_budget: usize,
    /// Parity shards held across all slots (at most [`MAX_HELD_PARITY`]).
    parity_held: usize,
    recovered_total: u64,
    pub(crate) frames_delivered: u64,
    pub(crate) frames_dropped: u64,
    /// Chunks refused because the frame buffers' byte budget was spent.
    pub(crate) frame_budget_refused: u64,
    /// Authenticated packets whose id jumped further ahead than the NACK window.
    pub(crate) packet_id_jumps: u64,
}

/// Offset and length of `payload` (a sub-slice of `msg`) inside `msg`.
fn payload_range(msg: &[u8], payload: &[u8]) -> (u32, u32) {
    let at = (payload.as_ptr() as usize).saturating_sub(msg.as_ptr() as usize);
    (at as u32, payload.len() as u32)
}

impl Receiver {
    pub(crate) fn new(cfg: &SessionConfig) -> Self {
        Self {
            acc: Acc {
                frame_losses: Vec::with_capacity(MAX_FRAME_LOSSES),
                acked: Vec::with_capacity(MAX_ACKS),
                ..Acc::default()
            },
            next_feedback: None,
            expected: 1,
            missing: VecDeque::with_capacity(MAX_MISSING),
            reliable: ReplayWindow::new(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            next_emit: None,
            offset_us: None,
            epoch: None,
            frame_interval: Duration::from_secs(1) / cfg.host.fps.max(1),
            slack: cfg.playout_slack,
            // Room for the largest parity shard accepted (2 KiB): no buffer grows per packet.
            pool: BufPool::new(2048),
            frame_pool: Vec::new(),
            fec: FecCodec::default(),
            scratch: Vec::new(),
            last_kf_request: None,
            jitter_us: 0.0,
            last_transit_us: None,
            max_frame: cfg.max_frame,
            frame_budget: frame_budget(cfg.max_frame),
            parity_held: 0,
            recovered_total: 0,
            frames_delivered: 0,
            frames_dropped: 0,
            frame_budget_refused: 0,
            packet_id_jumps: 0,
        }
    }

    /// Chunks rebuilt from parity so far.
    /// Current inter-arrival jitter estimate, µs.
    pub(crate) fn jitter_us(&self) -> u32 {
        self.jitter_us as u32
    }

    pub(crate) fn recovered_total(&self) -> u64 {
        self.recovered_total
    }

    /// Reliable-channel bookkeeping: true if this sequence number is new (deliver it).
    pub(crate) fn accept_reliable(&mut self, seq: u64) -> bool {
        if self.acc.acked.len() < MAX_ACKS {
            self.acc.acked.push(seq);
        }
        self.reliable.check_and_update(seq).is_ok()
    }
}
