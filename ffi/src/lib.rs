//! C ABI for switchyard (filled by the C ABI issue).
