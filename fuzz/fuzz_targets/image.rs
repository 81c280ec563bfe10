#![no_main]
// The body is codi_tests::fuzz::image, which tests/tests/fuzz_corpus.rs also replays.
libfuzzer_sys::fuzz_target!(|data: &[u8]| codi_tests::fuzz::image(data));
