#![no_main]
// Logic and oracles: switchyard_fuzz::ffi_ops (shared with this crate's replay test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::ffi_ops(data));
