//! Time per kernel, for `trifecta bench --profile`: wall-clock on the CPU, GPU events on CUDA.
//! Off unless enabled, so the hot path pays one relaxed atomic load per kernel.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// (kernel, total time, calls).
pub type Row = (&'static str, Duration, u64);

#[derive(Default)]
pub struct Profile {
    enabled: AtomicBool,
    totals: Mutex<HashMap<&'static str, (Duration, u64)>>,
}

impl Profile {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn record(&self, op: &'static str, elapsed: Duration) {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let entry = totals.entry(op).or_default();
        entry.0 += elapsed;
        entry.1 += 1;
    }

    /// (kernel, total time, calls), slowest first.
    pub fn report(&self) -> Vec<Row> {
        let totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = totals.iter().map(|(k, (d, n))| (*k, *d, *n)).collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1));
        rows
    }
}
