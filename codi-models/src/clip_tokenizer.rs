//! CLIP's tokenizer from a pipeline's `tokenizer/` folder as transformers saves it: `tokenizer.json` when
//! present, else `vocab.json` + `merges.txt` (what `CLIPTokenizer` writes, and what Stable Diffusion
//! checkpoints ship), built into the byte-level BPE that transformers' converter makes for
//! `CLIPTokenizerFast`. The special tokens and the context length come from `tokenizer_config.json` and
//! `special_tokens_map.json` (SD-1.x pads with `<|endoftext|>`, SD-2.x with `!`).

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::ModelError;
use crate::tokenizer::TextTokenizer;

/// CLIP's pre-tokenizer pattern (contractions, letters, single digits, runs of other non-space characters).
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The most tokens a prompt may have (`model_max_length`); transformers writes 10³⁰ when it does not know.
const MAX_CONTEXT: u64 = 4096;

/// What `tokenizer_config.json` and `special_tokens_map.json` say, with CLIP's defaults.
struct Settings {
    bos: String,
    eos: String,
    pad: String,
    unk: String,
    max_length: usize,
}

/// A token as transformers writes it: a string, or an object with its `content`.
fn token(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn settings(dir: &Path) -> Result<Settings, ModelError> {
    let mut s = Settings {
        bos: "<|startoftext|>".into(),
        eos: "<|endoftext|>".into(),
        pad: "<|endoftext|>".into(),
        unk: "<|endoftext|>".into(),
        max_length: 77,
    };
    // The map is written after the config: where both name a token, the map's entry wins.
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let file = dir.join(name);
        if !file.exists() {
            continue;
        }
        let v = crate::diffusers_json::read_json(&file)?;
        for (key, slot) in [
            ("bos_token", &mut s.bos),
            ("eos_token", &mut s.eos),
            ("pad_token", &mut s.pad),
            ("unk_token", &mut s.unk),
        ] {
            if let Some(t) = token(v.get(key)) {
                *slot = t;
            }
        }
        if let Some(n) = v.get("model_max_length") {
            let n = n.as_f64().filter(|n| *n >= 1.0 && *n <= MAX_CONTEXT as f64);
            s.max_length = n.ok_or_else(|| ModelError::Config {
                file: file.clone(),
                reason: format!(
                    "`model_max_length` must be a number of tokens in 1..={MAX_CONTEXT}"
                ),
            })? as usize;
        }
    }
    Ok(s)
}

/// `merges.txt`: an optional `#version` line, then one merge `a b` per line. → the merges as pairs
fn read_merges(file: &Path) -> Result<Vec<Value>, ModelError> {
    let text = std::fs::read_to_string(file).map_err(|e| ModelError::Io {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            [a, b] if !a.is_empty() && !b.is_empty() => merges.push(json!([a, b])),
            _ => {
                return Err(ModelError::Config {
                    file: file.to_path_buf(),
                    reason: format!(
                        "line {}: a merge is two tokens separated by one space",
                        i + 1
                    ),
                })
            }
        }
    }
    Ok(merges)
}

/// `tokenizer.json` for `vocab` and `merges`, as transformers' CLIP converter writes it.
fn clip_tokenizer_json(vocab: Map<String, Value>, merges: Vec<Value>, s: &Settings) -> Value {
    let id = |t: &str| vocab.get(t).and_then(Value::as_u64);
    let mut special: Vec<&str> = vec![&s.bos, &s.eos, &s.unk, &s.pad];
    special.sort_unstable();
    special.dedup();
    let added: Vec<Value> = special
        .iter()
        .filter_map(|t| {
            Some(json!({"id": id(t)?, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                        "normalized": true, "special": true}))
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [s.eos, id(&s.eos)], "cls": [s.bos, id(&s.bos)],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": s.unk, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

/// Loads CLIP's tokenizer from `dir` (a pipeline's `tokenizer/` folder).
pub fn load(dir: &Path) -> Result<TextTokenizer, ModelError> {
    let s = settings(dir)?;
    let json_file = dir.join("tokenizer.json");
    if json_file.exists() {
        let inner = crate::tokenizer::read_tokenizer_json(&json_file)?;
        return TextTokenizer::new(inner, &json_file, s.max_length, &s.pad, Some(&s.eos));
    }
    let vocab_file = dir.join("vocab.json");
    if !vocab_file.exists() {
        return Err(ModelError::Io {
            file: dir.to_path_buf(),
            reason:
                "no tokenizer.json, and no vocab.json + merges.txt: not a CLIP tokenizer folder"
                    .into(),
        });
    }
    let vocab = match crate::diffusers_json::read_json(&vocab_file)? {
        Value::Object(map)
            if map
                .values()
                .all(|v| v.as_u64().is_some_and(|i| i <= u32::MAX as u64)) =>
        {
            map
        }
        _ => {
            return Err(ModelError::Config {
                file: vocab_file,
                reason: "not a vocabulary: an object from tokens to ids".into(),
            })
        }
    };
    for t in [&s.bos, &s.eos] {
        if !vocab.contains_key(t.as_str()) {
            return Err(ModelError::Config {
                file: vocab_file,
                reason: format!("the vocabulary has no token '{t}'"),
            });
        }
    }
    let merges = read_merges(&dir.join("merges.txt"))?;
    let value = clip_tokenizer_json(vocab, merges, &s);
    let inner = crate::tokenizer::tokenizer_from_value(value, &vocab_file)?;
    TextTokenizer::new(inner, &vocab_file, s.max_length, &s.pad, Some(&s.eos))
}
