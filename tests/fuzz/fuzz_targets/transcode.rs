#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hubhost_fuzz::transcode(data));
