//! Hands freed memory back to the OS once the server goes quiet.
//!
//! mimalloc keeps pages that threads freed, to reuse them without asking the kernel again:
//! under load that is what makes it fast, but after a burst of appends (every batch's request
//! bodies, receipts and fjall buffers) the process kept ~100 MB more than it used, until some
//! later allocation happened to purge it. Purging at once (`MIMALLOC_PURGE_DELAY=0`) costs a
//! quarter of batch throughput, so instead this thread asks mimalloc to collect when the log
//! has stopped growing, and once a minute regardless (for read-only load).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use provledger_ledger::Ledger;

/// How often the trimmer looks at the log.
const TICK: Duration = Duration::from_secs(1);
/// Ticks without an append before the server counts as quiet.
const QUIET_TICKS: u32 = 2;
/// Longest time between two collections.
const AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// Starts the `provledger-trim` thread; it runs until the process ends.
pub fn spawn_trimmer(ledger: &Ledger) -> Result<()> {
    let ledger = ledger.clone();
    std::thread::Builder::new()
        .name("provledger-trim".into())
        .spawn(move || {
            let mut when = Trigger::new(ledger.head().size, Instant::now());
            loop {
                std::thread::sleep(TICK);
                if when.tick(ledger.head().size, Instant::now()) {
                    release_free_memory();
                }
            }
        })
        .context("cannot start the memory trimming thread")?;
    Ok(())
}

/// Decides, one tick at a time, when to collect: [`QUIET_TICKS`] ticks after the log last
/// grew, and [`AT_LEAST_EVERY`] regardless.
struct Trigger {
    size: u64,
    quiet: u32,
    grew: bool,
    last: Instant,
}

impl Trigger {
    fn new(size: u64, now: Instant) -> Trigger {
        Trigger {
            size,
            quiet: 0,
            grew: false,
            last: now,
        }
    }

    /// Whether to collect now, given the log's size at this tick.
    fn tick(&mut self, size: u64, now: Instant) -> bool {
        if size != self.size {
            (self.size, self.quiet, self.grew) = (size, 0, true);
            return false;
        }
        self.quiet = self.quiet.saturating_add(1);
        let due = (self.grew && self.quiet >= QUIET_TICKS)
            || now.duration_since(self.last) >= AT_LEAST_EVERY;
        if due {
            (self.grew, self.last) = (false, now);
        }
        due
    }
}

/// Returns the memory mimalloc holds free (in every thread's arenas) to the OS.
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and has no preconditions; mimalloc documents it
    // as callable from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_once_after_the_log_stops_growing_and_once_a_minute() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut t = Trigger::new(10, start);
        // Growing: never while appends keep coming.
        assert!(!t.tick(20, at(1)));
        assert!(!t.tick(30, at(2)));
        // Quiet for one tick: not yet; for two: once, and not again while quiet.
        assert!(!t.tick(30, at(3)));
        assert!(t.tick(30, at(4)));
        assert!(!t.tick(30, at(5)));
        assert!(!t.tick(30, at(63)));
        // A minute after the last collection, even without appends.
        assert!(t.tick(30, at(64)));
        assert!(!t.tick(30, at(65)));
        // A burst after that: collected again two quiet ticks later.
        assert!(!t.tick(31, at(66)));
        assert!(!t.tick(31, at(67)));
        assert!(t.tick(31, at(68)));
    }

    #[test]
    fn collecting_is_harmless_at_any_time() {
        let kept: Vec<Vec<u8>> = (0..1000).map(|i| vec![7u8; 100 + i]).collect();
        release_free_memory();
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, v)| v.len() == 100 + i && v[i] == 7));
    }
}
