//! `wavry-netsim`: a deterministic, in-process network simulator for RIFT's scenario tests and
//! benchmarks.
//!
//! Two (or more) sans-IO endpoints exchange datagrams through a [`Netsim`] on a virtual clock:
//! the caller passes `now` into every call, the simulator never reads a clock, spawns a thread
//! or opens a socket. A driving loop looks like quinn's test `Pair`:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wavry_netsim::{LinkConfig, Netsim, Rate};
//!
//! let a = "10.0.0.1:4000".parse().unwrap();
//! let b = "10.0.0.2:4000".parse().unwrap();
//! let start = Instant::now();
//! let mut sim = Netsim::new(42, start);
//! sim.add_path(a, b, LinkConfig::default()
//!     .with_delay(Duration::from_millis(20))
//!     .with_rate(Rate::mbps(10))
//!     .with_queue_limit_bytes(64 * 1024))
//!     .unwrap();
//!
//! sim.send(start, a, b, b"hello");
//! // Advance the virtual clock straight to the next delivery.
//! let now = sim.next_event_time().unwrap();
//! let d = sim.poll_delivery(now).unwrap();
//! assert_eq!((d.from, d.to, &d.data[..]), (a, b, &b"hello"[..]));
//! sim.recycle(d); // hand the buffer back so steady state does not allocate
//! ```
//!
//! # Model
//!
//! Links are directional. A datagram sent on a link meets, in order:
//!
//! 1. **Loss** ([`LossModel`]): Bernoulli or Gilbert–Elliott, decided at send time.
//! 2. **Bottleneck** (`rate`, `queue_limit_bytes`): a FIFO drained at `rate`. The datagram
//!    starts serialising at `start = max(arrival, previous datagram's finish)` and finishes at
//!    `departure = start + size·8 / rate`. Its queueing delay is `start − arrival`. It is
//!    tail-dropped if the bytes still queued or on the wire plus its own size would exceed
//!    `queue_limit_bytes`.
//! 3. **Propagation**: delivered at `departure + delay + U(0, jitter)`, but never before a
//!    datagram sent earlier on the link (FIFO), unless **reorder** fires, in which case it is
//!    delivered at `departure + delay` regardless of order and may overtake.
//! 4. **Duplicate**: an extra copy is delivered right after the original.
//! 5. **Corrupt**: one uniformly chosen bit of a copy is flipped.
//!
//! Rate, delay and jitter changes ([`Netsim::set_rate`], [`Netsim::update_link`]) apply to every
//! datagram that has not started serialising yet, as on a real link whose capacity changes.
//!
//! # Determinism
//!
//! Each link owns a PRNG seeded from the simulator seed and the link's two addresses, and every
//! datagram sent on a link consumes a fixed block of random numbers at send time. The same seed
//! and the same calls therefore give identical results; the results also do not depend on how
//! often the caller polls, on traffic on other links, or (for the fate of each datagram under one
//! impairment) on the probabilities of the other impairments.

mod config;
mod error;
mod rng;
mod stats;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use config::{LinkConfig, LossModel, Rate};
pub use error::NetsimError;
pub use stats::{DeliverySample, LinkStats, QueueDelaySummary};

use rng::Rng;
use stats::Sample;

/// Sentinel time for datagrams that cannot be scheduled yet (their link's rate is zero).
const NEVER: u64 = u64::MAX;

/// Buffers kept for reuse at most; beyond this, recycled buffers are freed.
const POOL_LIMIT: usize = 4096;

/// A datagram handed to its receiver by [`Netsim::poll_delivery`].
///
/// Owns a pooled buffer: pass the `Delivery` (or its `data`) back with [`Netsim::recycle`] /
/// [`Netsim::recycle_buffer`] once processed so the next send reuses it instead of allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The virtual time at which the datagram arrived (at or before the `now` it was polled at).
    pub at: Instant,
    /// The sending address.
    pub from: SocketAddr,
    /// The receiving address.
    pub to: SocketAddr,
    /// The datagram's bytes (possibly corrupted).
    pub data: Vec<u8>,
}

/// What [`Netsim::send`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// Admitted to the link; it will be delivered (once, or twice if duplicated).
    Queued,
    /// Lost by the link's loss model.
    DroppedLoss,
    /// Tail-dropped at the link's full bottleneck queue.
    DroppedQueue,
    /// No link from the sender to the receiver; counted in [`Netsim::unroutable`].
    Unroutable,
}

/// A datagram admitted to a link whose bottleneck serialisation has not finished yet (or has
/// not been scheduled because the rate is zero). Kept for backlog accounting and re-timing.
#[derive(Debug, Clone, Copy)]
struct Record {
    arrival: u64,
    size: usize,
    /// Uniform draw in `[0, 1)` scaled by the jitter in force when the datagram is scheduled.
    jitter_u: f64,
    reorder: bool,
    /// FIFO floor before this datagram: latest delivery of earlier non-reordered datagrams.
    floor_before: u64,
    start: u64,
    finish: u64,
    delivery: u64,
}

/// The fixed block of random numbers one datagram consumes at send time.
#[derive(Debug, Clone, Copy)]
struct Draws {
    loss: f64,
    transition: f64,
    jitter: f64,
    reorder: f64,
    duplicate: f64,
    corrupt: f64,
    corrupt_bit: u64,
    corrupt_dup: f64,
    corrupt_dup_bit: u64,
}

impl Draws {
    fn take(rng: &mut Rng) -> Self {
        Self {
            loss: rng.next_f64(),
            transition: rng.next_f64(),
            jitter: rng.next_f64(),
            reorder: rng.next_f64(),
            duplicate: rng.next_f64(),
            corrupt: rng.next_f64(),
            corrupt_bit: rng.next_u64(),
            corrupt_dup: rng.next_f64(),
            corrupt_dup_bit: rng.next_u64(),
        }
    }
}

#[derive(Debug)]
struct Link {
    from: SocketAddr,
    to: SocketAddr,
    cfg: LinkConfig,
    rng: Rng,
    /// Gilbert–Elliott state: `true` while in the bad state.
    ge_bad: bool,
    /// Admitted datagrams whose serialisation has not finished, in FIFO order.
    records: VecDeque<Record>,
    /// Sequence number of `records[0]`.
    front_pkt: u64,
    /// Sequence number the next admitted datagram gets.
    next_pkt: u64,
    /// Sum of `records[..].size`.
    backlog_bytes: usize,
    /// FIFO floor for the next datagram.
    floor: u64,
    /// Receiver side: lowest sequence number not yet delivered.
    next_expected: u64,
    /// Receiver side: `ahead[i]` is whether `next_expected + i` was delivered already.
    ahead: VecDeque<bool>,
    stats: LinkStats,
}

impl Link {
    fn new(seed: u64, from: SocketAddr, to: SocketAddr, cfg: LinkConfig, origin: Instant) -> Self {
        Self {
            from,
            to,
            cfg,
            rng: Rng::for_link(seed, from, to),
            ge_bad: false,
            records: VecDeque::new(),
            front_pkt: 0,
            next_pkt: 0,
            backlog_bytes: 0,
            floor: 0,
            next_expected: 0,
            ahead: VecDeque::new(),
            stats: LinkStats::new(origin),
        }
    }

    /// Applies the loss model (advancing the Gilbert–Elliott chain); `true` if lost.
    fn lose(&mut self, d: &Draws) -> bool {
        match self.cfg.loss {
            LossModel::None => false,
            LossModel::Bernoulli(p) => d.loss < p,
            LossModel::GilbertElliott {
                p_gb,
                p_bg,
                loss_good,
                loss_bad,
            } => {
                let (p_loss, p_switch) = if self.ge_bad {
                    (loss_bad, p_bg)
                } else {
                    (loss_good, p_gb)
                };
                if d.transition < p_switch {
                    self.ge_bad = !self.ge_bad;
                }
                d.loss < p_loss
            }
        }
    }

    /// Forgets datagrams whose serialisation finished by `now`.
    fn prune(&mut self, now: u64) {
        while let Some(r) = self.records.front() {
            if r.finish > now {
                break;
            }
            self.backlog_bytes -= r.size;
            self.records.pop_front();
            self.front_pkt += 1;
        }
    }

    /// (Re)computes start, finish and delivery for `records[k..]` under the current config.
    /// Datagrams cannot start before `now` (that covers a link coming back from rate zero).
    fn schedule(&mut self, k: usize, now: u64) {
        let mut prev_finish = if k > 0 { self.records[k - 1].finish } else { 0 };
        let mut floor = self.records[k].floor_before;
        let delay = duration_ns(self.cfg.delay);
        let jitter = duration_ns(self.cfg.jitter) as f64;
        let rate = self.cfg.rate;
        for r in self.records.range_mut(k..) {
            r.floor_before = floor;
            let ser = match rate {
                None => Some(0),
                Some(rate) => rate.serialization_ns(r.size),
            };
            let Some(ser) = ser.filter(|_| prev_finish != NEVER) else {
                (r.start, r.finish, r.delivery) = (NEVER, NEVER, NEVER);
                prev_finish = NEVER;
                continue;
            };
            r.start = prev_finish.max(r.arrival).max(now);
            r.finish = r.start.saturating_add(ser);
            let base = r.finish.saturating_add(delay);
            r.delivery = if r.reorder {
                base
            } else {
                let d = base.saturating_add((r.jitter_u * jitter) as u64).max(floor);
                floor = d;
                d
            };
            prev_finish = r.finish;
        }
        self.floor = floor;
    }

    /// Receiver-side order tracking: records delivery of `pkt`; `true` if it overtook an
    /// earlier datagram still in flight.
    fn note_arrival(&mut self, pkt: u64) -> bool {
        let Some(idx) = pkt.checked_sub(self.next_expected) else {
            return false;
        };
        let idx = idx as usize;
        if self.ahead.len() <= idx {
            self.ahead.resize(idx + 1, false);
        }
        self.ahead[idx] = true;
        while self.ahead.front() == Some(&true) {
            self.ahead.pop_front();
            self.next_expected += 1;
        }
        idx > 0
    }
}

/// A scheduled delivery in the event heap.
#[derive(Debug)]
struct Event {
    at: u64,
    /// Global insertion order: ties in `at` deliver in send order.
    seq: u64,
    link: usize,
    pkt: u64,
    duplicate: bool,
    queue_delay: u64,
    data: Vec<u8>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    /// Reversed so `BinaryHeap` (a max-heap) pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1)
}

/// Takes a pooled buffer (or a new one) holding a copy of `data`; counts in `misses` each time
/// this has to allocate (empty pool, or a pooled buffer too small).
fn take_buffer(pool: &mut Vec<Vec<u8>>, misses: &mut u64, data: &[u8]) -> Vec<u8> {
    let mut buf = pool.pop().unwrap_or_default();
    if buf.capacity() < data.len() {
        *misses += 1;
    }
    buf.clear();
    buf.extend_from_slice(data);
    buf
}

/// Flips bit `below(bits, len·8)` of `buf`; `false` if `buf` is empty.
fn flip_bit(buf: &mut [u8], bits: u64) -> bool {
    if buf.is_empty() {
        return false;
    }
    let bit = rng::below(bits, buf.len() as u64 * 8);
    buf[(bit / 8) as usize] ^= 1 << (bit % 8);
    true
}

/// The simulated network: directional links between socket addresses, a virtual clock supplied
/// by the caller, and a heap of pending deliveries.
///
/// Time passed to any method must not go backwards; an earlier `now` is treated as the latest
/// time seen so far.
#[derive(Debug)]
pub struct Netsim {
    origin: Instant,
    now: u64,
    seed: u64,
    links: Vec<Link>,
    index: HashMap<(SocketAddr, SocketAddr), usize>,
    heap: BinaryHeap<Event>,
    seq: u64,
    pool: Vec<Vec<u8>>,
    pool_misses: u64,
    unroutable: u64,
    record_samples: bool,
}

impl Netsim {
    /// Creates an empty network whose random streams derive from `seed` and whose virtual clock
    /// starts at `start` (times before `start` are treated as `start`).
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            origin: start,
            now: 0,
            seed,
            links: Vec::new(),
            index: HashMap::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            pool: Vec::new(),
            pool_misses: 0,
            unroutable: 0,
            record_samples: true,
        }
    }

    /// Converts `t` to nanoseconds since the origin, never going backwards.
    fn observe(&mut self, t: Instant) -> u64 {
        let ns = u64::try_from(t.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(NEVER - 1)
            .min(NEVER - 1);
        self.now = self.now.max(ns);
        self.now
    }

    fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }

    fn link_index(&self, from: SocketAddr, to: SocketAddr) -> Result<usize, NetsimError> {
        self.index
            .get(&(from, to))
            .copied()
            .ok_or(NetsimError::UnknownLink { from, to })
    }

    /// Adds the directional link `from → to`. If it exists already, its configuration is
    /// replaced (as by [`Netsim::update_link`] at the latest time seen) and its state and
    /// statistics are kept.
    pub fn add_link(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        config: LinkConfig,
    ) -> Result<(), NetsimError> {
        config.validate()?;
        if let Some(&i) = self.index.get(&(from, to)) {
            self.links[i].cfg = config;
            self.retime(i);
            return Ok(());
        }
        self.index.insert((from, to), self.links.len());
        self.links
            .push(Link::new(self.seed, from, to, config, self.origin));
        Ok(())
    }

    /// Adds both `a → b` and `b → a` with the same configuration (each direction has its own
    /// queue, random stream and statistics).
    pub fn add_path(
        &mut self,
        a: SocketAddr,
        b: SocketAddr,
        config: LinkConfig,
    ) -> Result<(), NetsimError> {
        self.add_link(a, b, config.clone())?;
        self.add_link(b, a, config)
    }

    /// The current configuration of `from → to`, if that link exists.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> Option<&LinkConfig> {
        self.index.get(&(from, to)).map(|&i| &self.links[i].cfg)
    }

    /// Changes the configuration of `from → to` at virtual time `now` via `f`.
    ///
    /// Rate, delay and jitter changes re-time every datagram that has not started serialising
    /// by `now`; loss, duplicate, corrupt, reorder and queue-limit changes apply to datagrams
    /// sent from now on. If the edited configuration is invalid it is rolled back and the error
    /// returned.
    pub fn update_link(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        f: impl FnOnce(&mut LinkConfig),
    ) -> Result<(), NetsimError> {
        let i = self.link_index(from, to)?;
        self.observe(now);
        let link = &mut self.links[i];
        let old = link.cfg.clone();
        f(&mut link.cfg);
        if let Err(e) = link.cfg.validate() {
            link.cfg = old;
            return Err(e);
        }
        self.retime(i);
        Ok(())
    }

    /// Sets the bottleneck capacity of `from → to` at virtual time `now` (`None`: unlimited;
    /// `Some(Rate::bps(0))`: outage). Datagrams already queued but not yet serialising drain at
    /// the new rate. Shorthand for [`Netsim::update_link`].
    pub fn set_rate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        rate: Option<Rate>,
    ) -> Result<(), NetsimError> {
        self.update_link(now, from, to, |c| c.rate = rate)
    }

    /// Re-schedules link `i`'s datagrams that have not started serialising by `self.now`.
    fn retime(&mut self, i: usize) {
        let now = self.now;
        let link = &mut self.links[i];
        link.prune(now);
        let Some(k) = link.records.iter().position(|r| r.start > now) else {
            return;
        };
        link.schedule(k, now);
        let first = link.front_pkt + k as u64;
        let mut events = std::mem::take(&mut self.heap).into_vec();
        for e in &mut events {
            if e.link == i && e.pkt >= first {
                let r = &link.records[(e.pkt - link.front_pkt) as usize];
                e.at = r.delivery;
                e.queue_delay = r.start.saturating_sub(r.arrival);
            }
        }
        self.heap = BinaryHeap::from(events);
    }

    /// Offers the datagram `data` to the link `from → to` at virtual time `now`.
    ///
    /// Never fails: the returned [`SendOutcome`] says whether it was admitted, lost, tail-dropped
    /// or had no link (counted in [`Netsim::unroutable`]). The bytes are copied into a pooled
    /// buffer. Call [`Netsim::next_event_time`] afterwards: the new datagram may now be the
    /// earliest delivery.
    pub fn send(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> SendOutcome {
        let now = self.observe(now);
        let Some(&i) = self.index.get(&(from, to)) else {
            self.unroutable += 1;
            return SendOutcome::Unroutable;
        };
        let link = &mut self.links[i];
        link.stats.sent += 1;
        let d = Draws::take(&mut link.rng);
        if link.lose(&d) {
            link.stats.dropped_loss += 1;
            return SendOutcome::DroppedLoss;
        }
        link.prune(now);
        if link.backlog_bytes.saturating_add(data.len()) > link.cfg.queue_limit_bytes {
            link.stats.dropped_queue += 1;
            return SendOutcome::DroppedQueue;
        }
        let pkt = link.next_pkt;
        link.next_pkt += 1;
        link.backlog_bytes += data.len();
        link.records.push_back(Record {
            arrival: now,
            size: data.len(),
            jitter_u: d.jitter,
            reorder: d.reorder < link.cfg.reorder,
            floor_before: link.floor,
            start: 0,
            finish: 0,
            delivery: 0,
        });
        let k = link.records.len() - 1;
        link.schedule(k, now);
        let r = link.records[k];
        let queue_delay = r.start.saturating_sub(r.arrival);

        let duplicated = d.duplicate < link.cfg.duplicate;
        if duplicated {
            link.stats.duplicated += 1;
        }
        let copies = [
            (false, d.corrupt, d.corrupt_bit),
            (true, d.corrupt_dup, d.corrupt_dup_bit),
        ];
        for (duplicate, corrupt_u, bit) in copies.into_iter().take(1 + usize::from(duplicated)) {
            let mut buf = take_buffer(&mut self.pool, &mut self.pool_misses, data);
            if corrupt_u < link.cfg.corrupt && flip_bit(&mut buf, bit) {
                link.stats.corrupted += 1;
            }
            self.heap.push(Event {
                at: r.delivery,
                seq: self.seq,
                link: i,
                pkt,
                duplicate,
                queue_delay,
                data: buf,
            });
            self.seq += 1;
        }
        SendOutcome::Queued
    }

    /// The earliest pending delivery time, or `None` if nothing is in flight (or everything in
    /// flight waits on a zero-rate link). Drivers advance their clock to the minimum of this
    /// and their endpoints' timers, then call [`Netsim::poll_delivery`]. Any `send` or link
    /// update may make it earlier, so ask again after those.
    pub fn next_event_time(&self) -> Option<Instant> {
        self.heap
            .peek()
            .filter(|e| e.at != NEVER)
            .map(|e| self.instant(e.at))
    }

    /// Hands over the earliest datagram due at or before `now`, or `None` if none is due.
    /// Call repeatedly until `None` to drain everything due; deliveries come out in time order
    /// (ties in send order).
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery> {
        let now = self.observe(now);
        if self.heap.peek()?.at > now {
            return None;
        }
        let e = self.heap.pop()?;
        let link = &mut self.links[e.link];
        link.stats.delivered += 1;
        link.stats.bytes_delivered += e.data.len() as u64;
        if !e.duplicate && link.note_arrival(e.pkt) {
            link.stats.reordered += 1;
        }
        if self.record_samples {
            link.stats.record(Sample {
                at: e.at,
                queue_delay: e.queue_delay,
                bytes: u32::try_from(e.data.len()).unwrap_or(u32::MAX),
            });
        }
        let (from, to) = (link.from, link.to);
        Some(Delivery {
            at: self.instant(e.at),
            from,
            to,
            data: e.data,
        })
    }

    /// Delivers every datagram due at or before `now` to `f`, recycling each buffer afterwards;
    /// returns how many were delivered. `f` may modify the bytes in place (e.g. to decrypt).
    pub fn deliver_due(&mut self, now: Instant, mut f: impl FnMut(&mut Delivery)) -> usize {
        let mut n = 0;
        while let Some(mut d) = self.poll_delivery(now) {
            f(&mut d);
            self.recycle(d);
            n += 1;
        }
        n
    }

    /// Returns a delivery's buffer to the pool so a later [`Netsim::send`] can reuse it.
    pub fn recycle(&mut self, delivery: Delivery) {
        self.recycle_buffer(delivery.data);
    }

    /// Returns any byte buffer to the pool (e.g. a `Delivery::data` kept past its `Delivery`).
    pub fn recycle_buffer(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL_LIMIT && buf.capacity() > 0 {
            self.pool.push(buf);
        }
    }

    /// How many times a send had to allocate a payload buffer because the pool held none large
    /// enough. Once deliveries are recycled this stops growing (it only rises when more copies
    /// are in flight than ever before), which is how benchmarks can check steady state.
    pub fn buffer_allocations(&self) -> u64 {
        self.pool_misses
    }

    /// Number of copies scheduled but not yet delivered, across all links.
    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }

    /// Statistics of `from → to`, if that link exists.
    pub fn stats(&self, from: SocketAddr, to: SocketAddr) -> Option<&LinkStats> {
        self.index.get(&(from, to)).map(|&i| &self.links[i].stats)
    }

    /// Datagrams sent to an address pair with no link (dropped, never a panic).
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// Turns per-delivery sample recording on (the default) or off. Samples back the
    /// time-range queries on [`LinkStats`]; long benchmarks can switch them off to keep memory
    /// flat. Counters are always kept.
    pub fn set_record_samples(&mut self, on: bool) {
        self.record_samples = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn invalid_update_is_rolled_back() {
        let t0 = Instant::now();
        let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let mut sim = Netsim::new(1, t0);
        sim.add_link(a, b, LinkConfig::default().with_duplicate(0.5))
            .unwrap();
        let err = sim
            .update_link(t0, a, b, |c| {
                c.duplicate = 0.1;
                c.corrupt = -1.0;
            })
            .unwrap_err();
        assert!(matches!(
            err,
            NetsimError::InvalidProbability {
                field: "corrupt",
                ..
            }
        ));
        assert_eq!(
            sim.link(a, b),
            Some(&LinkConfig::default().with_duplicate(0.5))
        );
        assert!(
            sim.add_link(b, a, LinkConfig::default().with_reorder(2.0))
                .is_err()
        );
        assert!(sim.link(b, a).is_none());
    }

    #[test]
    fn re_adding_a_link_replaces_its_config_and_keeps_stats() {
        let t0 = Instant::now();
        let (a, b) = (addr("10.0.0.1:1"), addr("[::1]:2"));
        let mut sim = Netsim::new(1, t0);
        sim.add_link(a, b, LinkConfig::default()).unwrap();
        sim.send(t0, a, b, b"x");
        let slow = LinkConfig::default().with_delay(Duration::from_millis(5));
        sim.add_link(a, b, slow.clone()).unwrap();
        assert_eq!(sim.link(a, b), Some(&slow));
        assert_eq!(sim.stats(a, b).unwrap().sent, 1);
        // The datagram sent at t0 left instantly, so it keeps its original (zero) delay.
        assert_eq!(sim.next_event_time(), Some(t0));
    }

    #[test]
    fn time_never_goes_backwards() {
        let t0 = Instant::now();
        let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let mut sim = Netsim::new(1, t0);
        sim.add_link(
            a,
            b,
            LinkConfig::default().with_delay(Duration::from_millis(10)),
        )
        .unwrap();
        let later = t0 + Duration::from_secs(1);
        assert!(sim.poll_delivery(later).is_none());
        // A send stamped earlier than the latest time seen is treated as sent at that time.
        sim.send(t0, a, b, b"late");
        assert_eq!(
            sim.next_event_time(),
            Some(later + Duration::from_millis(10))
        );
    }
}
