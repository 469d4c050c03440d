#![no_main]
// Logic and oracles: switchyard::fuzzing::channel_ops (shared with tests/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::channel_ops(data));
