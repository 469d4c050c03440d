//! Handles whose double free is detected instead of being undefined: freed
//! shells keep their memory (marked dead) in a bounded quarantine, so a second
//! `_free` (or a call) on a recently freed handle reads valid memory, finds it
//! dead and reports `SY_INVALID_ARGUMENT`. Best effort: once a shell leaves the
//! quarantine (after `QUARANTINE` later frees) its memory is really released
//! and a stale pointer is undefined behaviour again, as with free(3).

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(crate) const LIVE: u64 = 0x5359_4c49_5645_0001; // "SYLIVE"
pub(crate) const DEAD: u64 = 0x5359_4445_4144_0002; // "SYDEAD"
/// A live reader inside one of its own entry points that may run C code (a
/// policy's pick callback, a picker's free, a user datum's release): a call
/// on it from there is refused (see `reader::enter`). Not live, so the hit
/// path of `sy_pick`, which checks for `LIVE` anyway, refuses it for free.
pub(crate) const BUSY: u64 = 0x5359_4255_5359_0003; // "SYBUSY"
const QUARANTINE: usize = 4096;

/// What a handle wraps: a magic word, then the value (dropped on free).
/// The word is atomic: a channel (or a resolver's cc) is used from several
/// threads, one of which may be freeing it while a callback on another asks
/// whether it is still live.
pub(crate) struct Shell<T> {
    pub(crate) magic: AtomicU64,
    pub(crate) value: ManuallyDrop<T>,
}

impl<T> Shell<T> {
    pub(crate) fn new(value: T) -> Shell<T> {
        Shell {
            magic: AtomicU64::new(LIVE),
            value: ManuallyDrop::new(value),
        }
    }

    /// The value of a live shell, `None` for a dead (or busy) one. The word
    /// is read through the raw pointer first: no reference to the shell is
    /// formed over one whose value another thread is dropping.
    ///
    /// # Safety
    /// `shell` is non-NULL and points to a shell that is live or still in
    /// the quarantine.
    #[inline]
    pub(crate) unsafe fn live_value<'a>(shell: *const Shell<T>) -> Option<&'a T> {
        // SAFETY: per the contract, allocated; the word is only ever
        // accessed atomically.
        let magic = unsafe { &*addr_of!((*shell).magic) };
        if magic.load(Ordering::Acquire) != LIVE {
            return None;
        }
        // SAFETY: live: its value is not dropped (a free marks it dead
        // first); `ManuallyDrop` is `repr(transparent)`.
        Some(unsafe { &*addr_of!((*shell).value).cast::<T>() })
    }
}

/// A freed shell: its memory only (its value is already dropped), kept as a
/// raw pointer. Not a `Box`: a second `_free` (or any call) on the stale
/// handle reads the shell through the C pointer, which must not alias a
/// `Box` that claims unique access.
struct Grave {
    ptr: *mut (),
    /// Releases `ptr`'s memory: `release::<H>` for the handle type.
    release: unsafe fn(*mut ()),
}

// SAFETY: a grave is memory only: releasing it drops no value, so any thread
// may do it.
unsafe impl Send for Grave {}

impl Drop for Grave {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::<H>::into_raw` with `release` made
        // for that `H`, and leaves the quarantine (is dropped) once.
        unsafe { (self.release)(self.ptr) }
    }
}

/// Releases a quarantined handle's memory. Its value was dropped by `bury`;
/// a `Shell`'s is `ManuallyDrop`, so nothing is dropped twice.
///
/// # Safety
/// `p` is from `Box::<H>::into_raw`, released once.
unsafe fn release<H>(p: *mut ()) {
    // SAFETY: per the function's contract.
    drop(unsafe { Box::from_raw(p.cast::<H>()) });
}

static GRAVEYARD: Mutex<VecDeque<Grave>> = Mutex::new(VecDeque::new());

/// Drops the value of a live shell, marks it dead and quarantines it.
/// Returns false (doing nothing) if it was already dead. Liveness is read
/// through the raw pointer: no `Box` or `&mut` is formed over a handle that
/// may already be in the quarantine.
///
/// # Safety
/// `handle` is non-NULL, from `Box::<H>::into_raw`, and either live (not used
/// by anything else during the call) or still in the quarantine; `shell`
/// projects it to its shell without creating a reference (`addr_of_mut!`).
pub(crate) unsafe fn bury<T, H>(
    handle: *mut H,
    shell: impl FnOnce(*mut H) -> *mut Shell<T>,
) -> bool {
    let s = shell(handle);
    // SAFETY: per the contract, `s` points into a live allocation (the
    // handle's, or a quarantined one's); the word is only ever accessed
    // atomically.
    let magic = unsafe { &*addr_of!((*s).magic) };
    if magic
        .compare_exchange(LIVE, DEAD, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Not ours to free again: the quarantine owns its memory.
        return false;
    }
    // SAFETY: it was live, so its value was never dropped; it is marked
    // dead now (by this thread alone: the exchange), so it is never dropped
    // again, and no new user gets past `live_value`.
    unsafe { ManuallyDrop::drop(&mut *addr_of_mut!((*s).value)) };
    let grave = Grave {
        ptr: handle.cast(),
        release: release::<H>,
    };
    let released = {
        let mut g = GRAVEYARD.lock().unwrap_or_else(|p| p.into_inner());
        g.push_back(grave);
        if g.len() > QUARANTINE {
            g.pop_front()
        } else {
            None
        }
    };
    // Outside the lock. The value inside is already dropped: only memory goes.
    drop(released);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_bury_is_detected() {
        struct Handle(Shell<Vec<u8>>);
        let p = Box::into_raw(Box::new(Handle(Shell::new(vec![1, 2, 3]))));
        // SAFETY: from Box::into_raw, live; then quarantined (the second call
        // only reads its magic word through the raw pointer). The fresh ones
        // push it out of the quarantine, which releases its memory: under
        // Miri, that release is where aliasing a quarantined Box showed.
        unsafe {
            assert!(bury(p, |h| addr_of_mut!((*h).0)));
            assert!(!bury(p, |h| addr_of_mut!((*h).0)));
            for _ in 0..QUARANTINE {
                let q = Box::into_raw(Box::new(Handle(Shell::new(Vec::new()))));
                assert!(bury(q, |h| addr_of_mut!((*h).0)));
            }
        }
    }
}
