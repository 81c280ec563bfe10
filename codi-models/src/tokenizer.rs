//! Text → token ids through the `tokenizers` crate on a `tokenizer.json` (CLIP's byte-level BPE, or the
//! word-level vocabulary of the embedded default), padded or truncated to the encoder's context length.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::error::ModelError;

/// A `tokenizer.json` tokenizer that turns prompts into fixed-length id sequences.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    file: PathBuf,
    /// Tokens per prompt after padding/truncation (77 for CLIP).
    pub max_length: usize,
    /// Id used to pad (CLIP pads with <|endoftext|>).
    pub pad_id: u32,
    /// Id that ends a prompt; kept as the last token when a prompt is truncated.
    pub eos_id: Option<u32>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; `pad_token` and `eos_token` are looked up in its vocabulary.
    pub fn from_file(
        file: &Path,
        max_length: usize,
        pad_token: &str,
        eos_token: Option<&str>,
    ) -> Result<Self, ModelError> {
        Self::new(
            read_tokenizer_json(file)?,
            file,
            max_length,
            pad_token,
            eos_token,
        )
    }

    /// A loaded tokenizer with its settings; `file` names it in errors.
    pub(crate) fn new(
        inner: tokenizers::Tokenizer,
        file: &Path,
        max_length: usize,
        pad_token: &str,
        eos_token: Option<&str>,
    ) -> Result<Self, ModelError> {
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| ModelError::Config {
                file: file.to_path_buf(),
                reason: format!("the vocabulary has no token '{t}'"),
            })
        };
        Ok(Self {
            pad_id: id(pad_token)?,
            eos_id: eos_token.map(id).transpose()?,
            inner,
            file: file.to_path_buf(),
            max_length,
        })
    }

    /// CLIP's tokenizer from a pipeline's `tokenizer/` folder: `tokenizer.json`, or `vocab.json` +
    /// `merges.txt` as transformers' `CLIPTokenizer` saves them; special tokens and context length from
    /// `tokenizer_config.json` / `special_tokens_map.json` (77 tokens padded with `<|endoftext|>` without them).
    pub fn clip(dir: &Path) -> Result<Self, ModelError> {
        crate::clip_tokenizer::load(dir)
    }

    /// The ids of one prompt, special tokens included, without padding.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let fail = |reason: String| ModelError::Io {
            file: self.file.clone(),
            reason: format!("cannot tokenize {text:?}: {reason}"),
        };
        // The tokenizers crate can still panic on a file it read without complaint: that is this file's error.
        let enc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.inner.encode(text, true)
        }))
        .map_err(|_| fail("the tokenizers crate failed".into()))?
        .map_err(|e| fail(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A batch of prompts as a padded id tensor. → [prompts, max_length]
    pub fn encode_batch<B: Backend>(
        &self,
        prompts: &[&str],
        device: &B::Device,
    ) -> Result<Tensor<B, 2, Int>, ModelError> {
        let mut all = Vec::with_capacity(prompts.len() * self.max_length);
        for p in prompts {
            let mut ids = self.ids(p)?;
            if ids.len() > self.max_length {
                ids.truncate(self.max_length);
                if let Some(eos) = self.eos_id {
                    ids[self.max_length - 1] = eos;
                }
            }
            ids.resize(self.max_length, self.pad_id);
            all.extend(ids.into_iter().map(|i| i as i64));
        }
        Ok(Tensor::from_data(
            TensorData::new(all, [prompts.len(), self.max_length]),
            device,
        ))
    }

    /// Number of ids in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Reads a `tokenizer.json`. The tokenizers crate panics on some malformed files instead of returning an
/// error (a decoder entry it cannot parse from a stream, a `Precompiled` normalizer it cannot rebuild): the
/// file is therefore parsed as JSON first and built from that value, `Precompiled` normalizers (sentencepiece
/// models, which no Stable Diffusion text encoder uses) are refused, and any panic left is caught and
/// reported as this file's error.
pub(crate) fn read_tokenizer_json(file: &Path) -> Result<tokenizers::Tokenizer, ModelError> {
    tokenizer_from_value(crate::diffusers_json::read_json(file)?, file)
}

/// A tokenizer from the JSON value of a `tokenizer.json` (read from, or standing for, `file`).
pub(crate) fn tokenizer_from_value(
    value: serde_json::Value,
    file: &Path,
) -> Result<tokenizers::Tokenizer, ModelError> {
    let bad = |reason: String| ModelError::Config {
        file: file.to_path_buf(),
        reason,
    };
    if mentions_type(&value, "Precompiled") {
        return Err(bad(
            "a `Precompiled` normalizer (sentencepiece), which codi does not read".into(),
        ));
    }
    if let Some(token) = template_token_missing(&value) {
        return Err(bad(format!(
            "the post-processor's template uses the special token {token:?}, which its `special_tokens` lacks"
        )));
    }
    let built = std::panic::catch_unwind(|| serde_json::from_value::<tokenizers::Tokenizer>(value));
    match built {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(bad(format!("not a tokenizer: {e}"))),
        Err(_) => Err(bad(
            "not a tokenizer: the tokenizers crate failed to read it".into(),
        )),
    }
}

/// A special token that a `TemplateProcessing` post-processor's templates use but its `special_tokens` does
/// not define (the tokenizers crate checks this when it builds one, not when it reads one, and panics at the
/// first prompt).
fn template_token_missing(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    fn used<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                if let Some(id) = map
                    .get("SpecialToken")
                    .and_then(|t| t.get("id"))
                    .and_then(Value::as_str)
                {
                    out.push(id);
                }
                map.values().for_each(|v| used(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| used(v, out)),
            _ => {}
        }
    }
    match value {
        // Recognised by its fields: the crate reads one whatever its `type` says.
        Value::Object(map)
            if map.contains_key("special_tokens")
                && (map.contains_key("single") || map.contains_key("pair")) =>
        {
            let mut ids = Vec::new();
            for key in ["single", "pair"] {
                if let Some(t) = map.get(key) {
                    used(t, &mut ids);
                }
            }
            let defined = map.get("special_tokens").and_then(Value::as_object);
            ids.into_iter()
                .find(|id| !defined.is_some_and(|d| d.contains_key(*id)))
                .map(str::to_string)
        }
        Value::Object(map) => map.values().find_map(template_token_missing),
        Value::Array(items) => items.iter().find_map(template_token_missing),
        _ => None,
    }
}

/// Whether any object in `value` has `"type": kind`.
fn mentions_type(value: &serde_json::Value, kind: &str) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            map.get("type").is_some_and(|t| t == kind)
                || map.values().any(|v| mentions_type(v, kind))
        }
        serde_json::Value::Array(items) => items.iter().any(|v| mentions_type(v, kind)),
        _ => false,
    }
}
