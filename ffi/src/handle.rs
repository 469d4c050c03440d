//! Handles whose double free is detected instead of being undefined: freed
//! shells keep their memory (marked dead) in a bounded quarantine, so a second
//! `_free` (or a call) on a recently freed handle reads valid memory, finds it
//! dead and reports `SY_INVALID_ARGUMENT`. Best effort: once a shell leaves the
//! quarantine (after `QUARANTINE` later frees) its memory is really released
//! and a stale pointer is undefined behaviour again, as with free(3).

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::Mutex;

pub(crate) const LIVE: u64 = 0x5359_4c49_5645_0001; // "SYLIVE"
pub(crate) const DEAD: u64 = 0x5359_4445_4144_0002; // "SYDEAD"
const QUARANTINE: usize = 4096;

/// What a handle wraps: a magic word, then the value (dropped on free).
pub(crate) struct Shell<T> {
    pub(crate) magic: u64,
    pub(crate) value: ManuallyDrop<T>,
}

impl<T> Shell<T> {
    pub(crate) fn new(value: T) -> Shell<T> {
        Shell {
            magic: LIVE,
            value: ManuallyDrop::new(value),
        }
    }

    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.magic == LIVE
    }
}

/// Freed shells: their memory, nothing else (values are already dropped).
type Grave = Box<dyn Send>;

static GRAVEYARD: Mutex<VecDeque<Grave>> = Mutex::new(VecDeque::new());

/// Drops the value of a live shell, marks it dead and quarantines it.
/// Returns false (doing nothing) if it was already dead.
pub(crate) fn bury<T: Send + 'static, H: Send + 'static>(
    handle: Box<H>,
    shell: impl FnOnce(&mut H) -> &mut Shell<T>,
) -> bool {
    let mut handle = handle;
    let s = shell(&mut handle);
    if !s.is_live() {
        // Not ours to free again: keep the memory where it is (it is in the
        // quarantine, which owns it).
        std::mem::forget(handle);
        return false;
    }
    s.magic = DEAD;
    // SAFETY: the shell was live, so its value was never dropped; it is
    // marked dead first, so it is never dropped again.
    unsafe { ManuallyDrop::drop(&mut s.value) };
    let released = {
        let mut g = GRAVEYARD.lock().unwrap_or_else(|p| p.into_inner());
        g.push_back(handle);
        if g.len() > QUARANTINE {
            g.pop_front()
        } else {
            None
        }
    };
    // Outside the lock. The value inside is ManuallyDrop: only memory goes.
    drop(released);
    true
}
