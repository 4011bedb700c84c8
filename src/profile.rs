//! Time per kernel, for `trifecta bench --profile`: wall-clock on the CPU, GPU events on CUDA.
//! Off unless enabled, so the hot path pays one relaxed atomic load per kernel.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// (scope, kernel, total time, calls): the scope is the part of the work the kernel ran for
/// (`Profile::set_scope`, e.g. "block 2").
pub type Row = (&'static str, &'static str, Duration, u64);

/// (total time, calls) per (scope, kernel).
type Totals = HashMap<(&'static str, &'static str), (Duration, u64)>;

#[derive(Default)]
pub struct Profile {
    enabled: AtomicBool,
    totals: Mutex<Totals>,
    scope: Mutex<&'static str>,
}

impl Profile {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Names the work that follows (only while enabled; otherwise a no-op).
    pub fn set_scope(&self, scope: &'static str) {
        if self.enabled() {
            *self.scope.lock().unwrap_or_else(|e| e.into_inner()) = scope;
        }
    }

    /// The current scope ("" before any).
    pub fn scope(&self) -> &'static str {
        *self.scope.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a kernel's time to the current scope.
    pub fn record(&self, op: &'static str, elapsed: Duration) {
        self.record_in(self.scope(), op, elapsed);
    }

    /// Adds a kernel's time to `scope` (a GPU's events are read after the scope moved on).
    pub fn record_in(&self, scope: &'static str, op: &'static str, elapsed: Duration) {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let entry = totals.entry((scope, op)).or_default();
        entry.0 += elapsed;
        entry.1 += 1;
    }

    /// Every (scope, kernel), slowest first.
    pub fn report(&self) -> Vec<Row> {
        let totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = totals
            .iter()
            .map(|((scope, k), (d, n))| (*scope, *k, *d, *n))
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.2));
        rows
    }
}

/// Rows summed by `key` (e.g. the kernel, or the scope): (key, total, calls), slowest first.
pub fn sum_by(
    rows: &[Row],
    key: impl Fn(&Row) -> &'static str,
) -> Vec<(&'static str, Duration, u64)> {
    let mut sums: HashMap<&'static str, (Duration, u64)> = HashMap::new();
    for row in rows {
        let entry = sums.entry(key(row)).or_default();
        entry.0 += row.2;
        entry.1 += row.3;
    }
    let mut out: Vec<_> = sums.into_iter().map(|(k, (d, n))| (k, d, n)).collect();
    out.sort_by_key(|row| (std::cmp::Reverse(row.1), row.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_a_kernel_and_sums_join_it_again() {
        let p = Profile::default();
        p.set_scope("ignored while off");
        p.enable();
        p.record("before any scope", Duration::from_millis(1));
        p.set_scope("block 0");
        p.record("conv", Duration::from_millis(3));
        p.record("conv", Duration::from_millis(1));
        p.set_scope("block 1");
        p.record("conv", Duration::from_millis(2));
        p.record_in("block 0", "norm", Duration::from_millis(5));
        let rows = p.report();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], ("block 0", "norm", Duration::from_millis(5), 1));
        assert!(rows.contains(&("block 0", "conv", Duration::from_millis(4), 2)));
        assert!(rows.contains(&("", "before any scope", Duration::from_millis(1), 1)));
        let kernels = sum_by(&rows, |r| r.1);
        assert_eq!(kernels[0], ("conv", Duration::from_millis(6), 3));
        let scopes = sum_by(&rows, |r| r.0);
        assert_eq!(scopes[0], ("block 0", Duration::from_millis(9), 3));
    }
}
