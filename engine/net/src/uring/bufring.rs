//! The provided-buffer ring: one mmap holding the ring of `io_uring_buf` entries (page aligned)
//! followed by the receive buffers. The kernel picks a buffer per received datagram batch; we
//! hand it back (push + publish) once its bytes were copied out.

use std::io;
use std::mem::size_of;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

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
            leak: false,
        };
        // SAFETY: the ring memory is page aligned, zeroed (tail 0), `entries` long and lives
        // until `Drop`, which the owning backend runs only after the ring is gone (field order)
        // or after the last multishot request ended.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(this.ring as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
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

    /// Gives buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    pub(super) fn push(&mut self, bid: u16) {
        assert!(bid < self.entries, "buffer id out of range");
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
    }

    /// Publishes pushed buffers to the kernel (one release store of the tail).
    pub(super) fn publish(&self) {
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
