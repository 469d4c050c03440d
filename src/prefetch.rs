//! A cache hint: start loading a line that a pick will read soon, without
//! waiting for it. Picks over tables larger than the caches use it to
//! overlap the misses of successive picks.

/// Starts loading the cache line holding `*p` (a hint: never faults, reads
/// nothing the program sees, and does nothing off x86-64 or under Miri).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch is a hint; it never faults or dereferences for the
    // program, whatever the address (SSE, in every x86-64 CPU).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}
