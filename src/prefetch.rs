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

/// Tables at least this long are larger than one core's L2 cache holds at
/// once (a random draw touches about a line per entry: the entry, its
/// counter, its counters' row): picks over them prefetch their upcoming
/// draws. Below, prefetching costs more than it saves (on a 2 MB L2 at
/// 10,000 endpoints: random 6.3 -> 7.4 ns, least_request 18 -> 22); above,
/// it saves (on a 512 KB L2 at 10,000: random 15 -> 11 ns, least_request
/// 47 -> 32, thread CPU time).
pub(crate) fn large_table_len() -> usize {
    static LEN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LEN.get_or_init(|| {
        l2_bytes().map_or(UNKNOWN_L2_LARGE, |bytes| (bytes / 64).clamp(1024, 1 << 20))
    })
}

/// When the L2's size is not known: a 2 MB L2's figure.
const UNKNOWN_L2_LARGE: usize = 32_768;

/// One core's L2 cache, in bytes, as the CPU reports it.
fn l2_bytes() -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID exists on every x86-64 CPU (the block is `unsafe`
        // for compilers before 1.87, where `__cpuid` was).
        #[allow(unused_unsafe)]
        let (max, l2) = unsafe { (__cpuid(0x8000_0000).eax, __cpuid(0x8000_0006).ecx) };
        // Leaf 0x8000_0006, ECX[31:16]: L2 size in KiB (AMD and Intel).
        let kib = (l2 >> 16) as usize;
        if max >= 0x8000_0006 && kib > 0 {
            return Some(kib * 1024);
        }
    }
    None
}
