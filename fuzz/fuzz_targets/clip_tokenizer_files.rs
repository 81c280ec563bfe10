#![no_main]
// The body is codi_tests::fuzz::clip_tokenizer_files, which tests/tests/fuzz_corpus.rs also replays.
libfuzzer_sys::fuzz_target!(|data: &[u8]| codi_tests::fuzz::clip_tokenizer_files(data));
