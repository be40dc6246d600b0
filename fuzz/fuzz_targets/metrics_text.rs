#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::metrics_text::run(data));
