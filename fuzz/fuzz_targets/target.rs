#![no_main]
// Logic and oracles: switchyard::fuzzing::target (shared with tests/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::target(data));
