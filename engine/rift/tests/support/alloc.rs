//! A counting global allocator for the no-allocation and bounded-memory tests. Each test crate
//! that uses it declares
//! `#[global_allocator] static GLOBAL: support::alloc::Counting = support::alloc::Counting;`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

/// Forwards to the system allocator and counts allocations and reallocations.
pub struct Counting;

thread_local! {
    // Only the measuring thread counts, into its own counter: the harness's threads and
    // tests measuring in parallel do not disturb each other.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    // Live bytes allocated by this thread (minus what it freed), and the peak while measuring.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note() {
    if MEASURING.with(Cell::get) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

fn live(delta: isize) {
    let now = LIVE.with(|l| {
        let v = l.get() + delta;
        l.set(v);
        v
    });
    if MEASURING.with(Cell::get) {
        PEAK.with(|p| p.set(p.get().max(now)));
    }
}

// SAFETY: every method forwards to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    // SAFETY: forwards the caller's contract to `System`.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        live(signed(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    // SAFETY: forwards the caller's contract to `System`.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-signed(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    // SAFETY: forwards the caller's contract to `System`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note();
        live(signed(new) - signed(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

/// Allocations made by the current thread while running `f`.
pub fn during(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    ALLOCS.with(Cell::get) - before
}

/// What [`measure`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Allocations and reallocations made while running.
    pub allocs: usize,
    /// Highest live heap bytes (of this thread) above the level at the start.
    pub peak_growth: isize,
    /// Live heap bytes at the end above the level at the start.
    pub end_growth: isize,
}

/// Runs `f` on the current thread and reports its allocations and live-heap growth.
pub fn measure(f: impl FnOnce()) -> Usage {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let allocs = during(f);
    Usage {
        allocs,
        peak_growth: PEAK.with(Cell::get) - start,
        end_growth: LIVE.with(Cell::get) - start,
    }
}
