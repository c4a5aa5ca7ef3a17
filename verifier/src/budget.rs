//! Time and work budgets, enforced by counting, never by signals or killing threads.
//!
//! Every loop that depends on the size of model output calls [`Budget::tick`]; once the step count
//! or the deadline is exceeded, the check unwinds with [`Exhausted`] and becomes a `Timeout` verdict.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The budget of one check ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// A per-check budget. Not `Sync`: each check owns one.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    steps_left: Cell<u64>,
    /// Look at the clock only every this many steps: `Instant::now` costs ~20 ns.
    until_clock: Cell<u32>,
}

const CLOCK_EVERY: u32 = 256;

impl Budget {
    pub fn new(time: Duration, max_steps: u64) -> Self {
        Budget {
            deadline: Instant::now() + time,
            steps_left: Cell::new(max_steps),
            until_clock: Cell::new(CLOCK_EVERY),
        }
    }

    /// A budget large enough not to matter in unit tests.
    pub fn generous() -> Self {
        Budget::new(Duration::from_secs(10), 50_000_000)
    }

    /// Spend `n` steps of work.
    #[inline]
    pub fn spend(&self, n: u64) -> Result<(), Exhausted> {
        let left = self.steps_left.get();
        if left < n {
            self.steps_left.set(0);
            return Err(Exhausted);
        }
        self.steps_left.set(left - n);
        let c = self.until_clock.get();
        if c == 0 {
            self.until_clock.set(CLOCK_EVERY);
            if Instant::now() >= self.deadline {
                self.steps_left.set(0);
                return Err(Exhausted);
            }
        } else {
            self.until_clock.set(c - 1);
        }
        Ok(())
    }

    #[inline]
    pub fn tick(&self) -> Result<(), Exhausted> {
        self.spend(1)
    }

    pub fn is_exhausted(&self) -> bool {
        self.steps_left.get() == 0 || Instant::now() >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_out() {
        let b = Budget::new(Duration::from_secs(60), 10);
        for _ in 0..10 {
            b.tick().unwrap();
        }
        assert_eq!(b.tick(), Err(Exhausted));
        assert!(b.is_exhausted());
    }

    #[test]
    fn deadline_runs_out() {
        let b = Budget::new(Duration::from_millis(0), u64::MAX);
        let mut hit = false;
        for _ in 0..10_000 {
            if b.tick().is_err() {
                hit = true;
                break;
            }
        }
        assert!(hit);
    }
}
