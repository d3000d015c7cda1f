//! A process-wide hook that the append pipeline's threads call when they fall quiet.
//!
//! The binary uses it to let its allocator return memory: with a thread-caching allocator
//! (mimalloc), blocks one thread frees that another thread allocated (a batch's records, freed
//! by the committer; a memtable, freed by fjall's flusher) go back to the allocating thread's
//! heap only when that thread allocates again or collects. A pipeline thread that is idle does
//! neither, so without the hook the memory of the last burst stays resident until the next one.

use std::sync::OnceLock;
use std::time::Duration;

/// How long a pipeline thread waits without work before it calls the hook (once per quiet spell).
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

static HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets the hook; the first call wins, later ones are ignored (it returns `false` for them).
pub fn set_idle_hook(hook: fn()) -> bool {
    HOOK.set(hook).is_ok()
}

/// Calls the hook, if one is set.
fn idle() {
    if let Some(hook) = HOOK.get() {
        hook();
    }
}

/// One thread's quiet spells: [`Quiet::busy`] after each piece of work, [`Quiet::waited`] after
/// each wait that timed out, which calls the hook once per spell.
#[derive(Default)]
pub(crate) struct Quiet {
    worked: bool,
}

impl Quiet {
    pub(crate) fn busy(&mut self) {
        self.worked = true;
    }

    pub(crate) fn waited(&mut self) {
        if std::mem::take(&mut self.worked) {
            idle();
        }
    }
}
