//! A counting global allocator for the no-allocation tests. Each test crate that uses it
//! declares `#[global_allocator] static GLOBAL: support::alloc::Counting = support::alloc::Counting;`.

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
}

fn note() {
    if MEASURING.with(Cell::get) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every method forwards to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    // SAFETY: forwards the caller's contract to `System`.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    // SAFETY: forwards the caller's contract to `System`.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    // SAFETY: forwards the caller's contract to `System`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note();
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
