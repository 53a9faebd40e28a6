//! A counting global allocator for the `it` test binary: live and peak bytes,
//! process-wide (for requests served by in-process bridge threads) and per
//! thread (for a verifier or parser called on the test's own thread).
//!
//! A global allocator is `unsafe` by nature: this file is one of the two
//! places the crate's `unsafe_code = "deny"` lint is lifted.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static T_LIVE: Cell<isize> = const { Cell::new(0) };
    static T_PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
    let _ = T_LIVE.try_with(|l| {
        let v = l.get() + n as isize;
        l.set(v);
        let _ = T_PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
    let _ = T_LIVE.try_with(|l| l.set(l.get() - n as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Peak bytes allocated by this thread while `f` runs, above what was live before.
pub fn thread_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = T_LIVE.with(Cell::get);
    T_PEAK.with(|p| p.set(base));
    let out = f();
    let peak = T_PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// Resets the process-wide peak to what is live now; returns that baseline.
pub fn reset_process_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// The process-wide peak since the last [`reset_process_peak`].
pub fn process_peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}
