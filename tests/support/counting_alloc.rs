//! A counting global allocator, shared by the tests that count allocations
//! (`tests/machine/alloc.rs`, `tests/shapes/stream.rs`,
//! `tests/driver/mailbox_tokio.rs`): it counts the heap allocations (alloc,
//! alloc_zeroed, realloc) made by the calling thread, the heap bytes it holds, and
//! the live heap bytes of the whole process with their peak, and forwards everything to `System`. A test file
//! includes it with `#[path = "../support/counting_alloc.rs"] mod counting_alloc;`,
//! which installs it as that test binary's global allocator (so such a file is a
//! binary of its own).

#![allow(dead_code)] // each binary that counts uses some of it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Heap bytes this thread allocated minus those it freed.
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Live heap bytes, all threads.
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The highest `LIVE` seen since the last [`reset_peak`].
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let _ = THREAD_LIVE.try_with(|n| n.set(n.get() + by));
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Starts a new peak at the live heap bytes now (every thread), and returns them.
pub fn reset_peak() -> isize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Heap bytes this thread allocated minus those it freed: the live heap of what
/// runs on this thread alone (a single-threaded runtime, say), whatever other
/// threads (the test harness's own) allocate meanwhile.
pub fn thread_live() -> isize {
    THREAD_LIVE.with(Cell::get)
}

/// The most live heap bytes (every thread) since the last [`reset_peak`].
pub fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Allocations this thread has made so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made on this thread while running `f`.
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = allocations();
    f();
    allocations() - before
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged;
// counting touches only a const-initialised thread-local `Cell` and atomics (no
// allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        grew(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        grew(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grew(-(layout.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
