//! Host-wide and per-invocation budgets: what a plugin may take from the host in total, not
//! only per call.
//!
//! - [`MemoryBudget`]: linear memory across *all* concurrent invocations of a runtime. The
//!   per-invocation memory limit bounds one call; without a total, N concurrent snapshots of a
//!   plugin that grows to its limit hold N times the limit. Every memory growth reserves from
//!   the budget and a finished invocation gives its reservation back.
//! - [`Amplification`]: bytes a call produces relative to the bytes it consumed. A restore
//!   that puts a gigabyte of state from a ten-kilobyte snapshot, or a snapshot that writes
//!   without reading, is a bug or an attack; either is stopped long before it fills the host.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default host-wide budget of plugin linear memory.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// Default amplification factor: a call may produce this many bytes per byte it consumed.
pub const DEFAULT_AMPLIFICATION: u64 = 16;

/// Bytes a call may produce regardless of what it consumed (format headers, small states).
pub const AMPLIFICATION_ALLOWANCE: u64 = 64 << 20;

/// Linear memory shared by every invocation of one runtime.
#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(MemoryBudget { total, used: AtomicUsize::new(0) })
    }

    /// The total.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or returns false (reserving nothing) if that would exceed the total.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.total)
            })
            .is_ok()
    }

    /// Gives back `bytes` reserved earlier.
    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes one invocation consumed (state read from views, snapshot bytes read from input
/// streams) and produced (snapshot bytes written, state put into sinks).
#[derive(Debug, Clone, Copy)]
pub struct Amplification {
    factor: u64,
    consumed: u64,
    produced: u64,
}

impl Amplification {
    /// An invocation that may produce `factor` bytes per byte consumed, plus
    /// [`AMPLIFICATION_ALLOWANCE`].
    pub fn new(factor: u64) -> Self {
        Amplification { factor, consumed: 0, produced: 0 }
    }

    /// Accounts for `bytes` handed to the guest.
    pub fn consume(&mut self, bytes: u64) {
        self.consumed = self.consumed.saturating_add(bytes);
    }

    /// Accounts for `bytes` the guest produces, or says why it may not.
    pub fn produce(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        let allowed = self.consumed.saturating_mul(self.factor).saturating_add(AMPLIFICATION_ALLOWANCE);
        let after = self.produced.saturating_add(bytes);
        if after > allowed {
            return Err(format!(
                "{what} would produce {after} bytes from {} bytes consumed, over the amplification limit \
                 (plugin.max-amplification = {}, plus {} MiB)",
                self.consumed,
                self.factor,
                AMPLIFICATION_ALLOWANCE >> 20
            ));
        }
        self.produced = after;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_is_shared_and_given_back() {
        let b = MemoryBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41), "over the total");
        assert_eq!(b.used(), 60);
        assert!(b.try_reserve(40));
        b.release(60);
        assert!(b.try_reserve(60));
    }

    #[test]
    fn amplification_is_relative_to_what_was_consumed() {
        let mut a = Amplification::new(2);
        a.produce(AMPLIFICATION_ALLOWANCE, "x").unwrap();
        let err = a.produce(1, "restore").unwrap_err();
        assert!(err.contains("plugin.max-amplification = 2"), "{err}");
        a.consume(10);
        a.produce(20, "restore").unwrap();
        assert!(a.produce(1, "restore").is_err());
    }
}
