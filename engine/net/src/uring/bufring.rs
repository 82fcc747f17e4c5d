//! The provided-buffer ring: one mmap holding the ring of `io_uring_buf` entries (page aligned)
//! followed by the receive buffers. The kernel picks a buffer per received datagram batch; we
//! hand it back (push + publish) once its bytes were copied out.
//!
//! The kernel takes buffers first in, first out, so a ring that kept every buffer posted would
//! cycle the receive path through all of them (64 x 64 KiB = 4 MiB, far more than a core's L2)
//! and every GRO batch would land in cold memory. Instead returned buffers wait in a LIFO
//! stash and only enough are posted to hold [`POSTED_BYTES`] of recent completions: a few
//! buffers, reused while still in cache, for 64 KiB GRO batches; all of them for single
//! datagrams, which fill a buffer's first kilobyte only.

use std::io;
use std::mem::size_of;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// Bytes of recent completions the posted buffers should hold (see the module docs); with
/// 64 KiB GRO batches that is 3 buffers, so [`MIN_POSTED`] decides. Fewer posted buffers
/// measured less kernel copy time per datagram (`wavry-bench net`, session over uring:
/// `_copy_to_iter` at 0.31 of the AEAD open's time with 64 buffers posted, 0.18 with 8, 0.13
/// with 4).
const POSTED_BYTES: usize = 256 << 10;
/// Never post fewer buffers than this (when the ring has that many): with 4, the session
/// stream in `wavry-bench net` found the ring dry on 6 % of its completions.
const MIN_POSTED: u16 = 8;
/// Completions without the ring running dry after which the floor raised by
/// [`BufRing::ran_dry`] halves again.
const CALM_COMPLETIONS: u32 = 1024;

/// A registered provided-buffer ring and its buffers. Safe API; the `unsafe` stays inside.
pub(super) struct BufRing {
    /// Start of the mmap: the entry ring (page aligned), then the buffers at `data`.
    ring: *mut BufRingEntry,
    data: *mut u8,
    map_len: usize,
    entries: u16,
    buf_size: usize,
    /// Local tail: entries pushed, published to the kernel by [`BufRing::publish`].
    tail: u16,
    /// Buffers the kernel holds: posted and not yet named by a completion.
    posted: u16,
    /// Returned buffers not posted, most recently used last (see the module docs).
    spare: Vec<u16>,
    /// Moving average of the bytes a completion filled, in 1/8 units.
    avg_fill8: usize,
    /// Fewest buffers to post: [`MIN_POSTED`], doubled each time the ring ran dry (a burst
    /// that finds no buffer ends the multishot receive, which then has to be re-armed, and a
    /// receiver that cannot keep up would pay that every few buffers).
    floor: u16,
    /// Completions since the ring last ran dry (or the floor last halved).
    calm: u32,
    /// Times the ring ran dry.
    dry: u64,
    /// Every buffer id posted, in order (what the kernel will take, first in first out).
    #[cfg(test)]
    posted_log: Vec<u16>,
    /// Set when the kernel might still write into the buffers (teardown failed): never unmap.
    leak: bool,
}

// SAFETY: `BufRing` owns its mapping exclusively (the raw pointer is not shared with any other
// Rust value); moving it to another thread moves that ownership. The kernel side is reached only
// through the ring that the owning backend also moves along.
unsafe impl Send for BufRing {}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("buf_size", &self.buf_size)
            .finish_non_exhaustive()
    }
}

impl BufRing {
    /// Maps `entries` (rounded up to a power of two, at most 32768) buffers of `buf_size` bytes,
    /// registers them as buffer group `bgid` on `ring` and hands them all to the kernel.
    pub(super) fn new(
        ring: &IoUring,
        entries: u16,
        bgid: u16,
        buf_size: usize,
    ) -> io::Result<Self> {
        let entries = entries.clamp(1, 1 << 15).next_power_of_two();
        let page = 4096;
        let ring_bytes = (usize::from(entries) * size_of::<BufRingEntry>()).next_multiple_of(page);
        let map_len = ring_bytes + usize::from(entries) * buf_size;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
        // result is checked against MAP_FAILED before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut this = Self {
            ring: base.cast(),
            // SAFETY: `ring_bytes < map_len`, so the offset stays inside the mapping.
            data: unsafe { base.cast::<u8>().add(ring_bytes) },
            map_len,
            entries,
            buf_size,
            tail: 0,
            posted: 0,
            spare: Vec::with_capacity(usize::from(entries)),
            avg_fill8: 0,
            floor: MIN_POSTED.min(entries),
            calm: 0,
            dry: 0,
            #[cfg(test)]
            posted_log: Vec::new(),
            leak: false,
        };
        // SAFETY: the ring memory is page aligned, zeroed (tail 0), `entries` long and lives
        // until `Drop`, which the owning backend runs only after the ring is gone (field order)
        // or after the last multishot request ended.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(this.ring as u64, entries, bgid, 0)?;
        }
        // Until completions show how much they fill, every buffer is posted.
        for bid in (0..entries).rev() {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Records that a completion handed buffer `bid`, filled with `len` bytes, to us.
    pub(super) fn taken(&mut self, bid: u16, len: usize) {
        debug_assert!(bid < self.entries, "buffer id out of range");
        self.posted = self.posted.saturating_sub(1);
        self.avg_fill8 = self.avg_fill8 - self.avg_fill8 / 8 + len.min(self.buf_size);
        self.calm += 1;
        if self.calm >= CALM_COMPLETIONS {
            self.calm = 0;
            self.floor = (self.floor / 2).max(MIN_POSTED.min(self.entries));
        }
    }

    /// Records that a receive found no posted buffer: post more from now on.
    pub(super) fn ran_dry(&mut self) {
        self.dry += 1;
        self.calm = 0;
        self.floor = self.floor.saturating_mul(2).min(self.entries);
    }

    /// Number of buffers (buffer ids are `0..entries()`).
    pub(super) fn entries(&self) -> usize {
        usize::from(self.entries)
    }

    /// Times the ring ran dry ([`Self::ran_dry`]).
    pub(super) fn dry_runs(&self) -> u64 {
        self.dry
    }

    /// How many buffers should be posted: enough for [`POSTED_BYTES`] of completions like the
    /// recent ones, at least the floor, at most all.
    pub(super) fn target(&self) -> u16 {
        let avg = (self.avg_fill8 / 8).max(1);
        let want = u16::try_from(POSTED_BYTES / avg).unwrap_or(u16::MAX);
        want.clamp(self.floor, self.entries)
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed to us.
    ///
    /// Only call for a buffer id taken from a completion and not yet pushed back: the kernel
    /// does not write to it then.
    pub(super) fn buf(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.entries, "buffer id out of range");
        let len = len.min(self.buf_size);
        // SAFETY: `bid < entries`, so the range lies inside our live mapping (initialised:
        // anonymous mappings are zero-filled). The caller got `bid` from a completion (read with
        // acquire ordering by io-uring), so the kernel's writes are visible and it will not
        // write again until the buffer is pushed back, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.data.add(usize::from(bid) * self.buf_size), len) }
    }

    /// [`Self::buf`], writable: the same ownership rule makes the bytes ours to change until
    /// the buffer is pushed back (the kernel reads nothing from a provided receive buffer).
    pub(super) fn buf_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.entries, "buffer id out of range");
        let len = len.min(self.buf_size);
        // SAFETY: as in `buf`: in bounds of our live, initialised mapping, and not written by
        // the kernel until pushed back (which needs `&mut self`, held exclusively by this
        // borrow, so no other slice of it exists).
        unsafe {
            std::slice::from_raw_parts_mut(self.data.add(usize::from(bid) * self.buf_size), len)
        }
    }

    /// Gives buffer `bid` back: it is posted again by [`BufRing::publish`] when the kernel
    /// needs it.
    pub(super) fn push(&mut self, bid: u16) {
        assert!(bid < self.entries, "buffer id out of range");
        debug_assert!(!self.spare.contains(&bid), "buffer {bid} returned twice");
        self.spare.push(bid);
    }

    /// Writes ring entry for buffer `bid` past the local tail (visible after the tail store).
    fn post(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.data as u64 + (usize::from(bid) * self.buf_size) as u64;
        // SAFETY: `idx < entries`, inside the page-aligned entry area of our mapping. The kernel
        // only reads entries between its head and the published tail; this one is past the
        // published tail, so nobody else accesses it now. The setters write addr/len/bid only,
        // never the `resv` field that doubles as the shared tail in entry 0.
        unsafe {
            let e = &mut *self.ring.add(idx);
            e.set_addr(addr);
            e.set_len(self.buf_size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.posted += 1;
        #[cfg(test)]
        self.posted_log.push(bid);
    }

    /// Posts the most recently returned buffers until [`Self::target`] are posted, and
    /// publishes them to the kernel (one release store of the tail).
    pub(super) fn publish(&mut self) {
        let target = self.target();
        while self.posted < target {
            let Some(bid) = self.spare.pop() else { break };
            self.post(bid);
        }
        // SAFETY: `ring` is the first entry of a registered ring, so `tail()` points at its
        // `resv` field, a naturally aligned u16 inside our mapping that the kernel reads
        // concurrently; it is accessed only atomically from here on.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Never unmap: the kernel may still write into the buffers (a teardown that failed).
    pub(super) fn leak(&mut self) {
        self.leak = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: `ring`/`map_len` are exactly the mapping made in `new`; no slice into it
        // outlives `self` (they borrow `self`), and the owning backend ended every request that
        // could write into it before this runs.
        unsafe {
            libc::munmap(self.ring.cast(), self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};

    use super::*;

    const ENTRIES: u16 = 64;

    /// Drives `b` the way the kernel and the backend do: the kernel takes posted buffers first
    /// in, first out and fills each with `fill` bytes; the backend gives each back and
    /// publishes. Returns the distinct buffers the last `window` completions used.
    fn stream(b: &mut BufRing, kernel: &mut VecDeque<u16>, n: usize, fill: usize) -> usize {
        let window = 1000.min(n);
        let mut used = BTreeSet::new();
        for i in 0..n {
            kernel.extend(b.posted_log.drain(..));
            let bid = kernel.pop_front().expect("a posted buffer");
            b.taken(bid, fill);
            if i >= n - window {
                used.insert(bid);
            }
            b.push(bid);
            b.publish();
        }
        kernel.extend(b.posted_log.drain(..));
        assert_eq!(
            usize::from(b.posted),
            kernel.len(),
            "posted count matches the ring"
        );
        used.len()
    }

    fn ring() -> (IoUring, BufRing) {
        let ring = IoUring::new(8).expect("io_uring");
        let bufs = BufRing::new(&ring, ENTRIES, 5, 68 << 10).expect("buffer ring");
        (ring, bufs)
    }

    #[test]
    fn gro_batches_cycle_through_a_few_buffers_that_stay_in_cache() {
        let (_ring, mut b) = ring();
        let mut kernel = VecDeque::new();
        assert_eq!(b.posted, ENTRIES, "all posted before any completion");
        // 54 x 1 234 B per GRO batch: POSTED_BYTES holds 3, the floor is MIN_POSTED.
        let used = stream(&mut b, &mut kernel, 10_000, 66_636);
        assert_eq!(b.posted, MIN_POSTED);
        assert!(used <= usize::from(MIN_POSTED) + 1, "{used} buffers in use");
    }

    #[test]
    fn single_datagrams_keep_every_buffer_posted() {
        let (_ring, mut b) = ring();
        let mut kernel = VecDeque::new();
        stream(&mut b, &mut kernel, 10_000, 1_234);
        assert_eq!(b.posted, ENTRIES);
    }

    #[test]
    fn a_ring_that_ran_dry_posts_more_until_it_stays_calm() {
        let (_ring, mut b) = ring();
        let mut kernel = VecDeque::new();
        stream(&mut b, &mut kernel, 2_000, 66_636);
        assert_eq!(b.posted, MIN_POSTED);
        b.ran_dry();
        b.ran_dry();
        stream(&mut b, &mut kernel, 1, 66_636);
        assert_eq!(b.posted, 4 * MIN_POSTED, "two dry runs: floor x4");
        // Calm completions halve the floor again, one step per CALM_COMPLETIONS.
        stream(&mut b, &mut kernel, CALM_COMPLETIONS as usize, 66_636);
        assert_eq!(b.target(), 2 * MIN_POSTED);
        stream(&mut b, &mut kernel, 2 * CALM_COMPLETIONS as usize, 66_636);
        assert_eq!(b.posted, MIN_POSTED);
        for _ in 0..20 {
            b.ran_dry();
        }
        assert_eq!(b.target(), ENTRIES, "never more than the ring holds");
        assert_eq!(b.dry_runs(), 22);
    }
}
