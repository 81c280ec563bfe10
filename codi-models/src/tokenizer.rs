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
        let inner = tokenizers::Tokenizer::from_file(file).map_err(|e| ModelError::Io {
            file: file.to_path_buf(),
            reason: format!("cannot read tokenizer: {e}"),
        })?;
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

    /// CLIP's tokenizer files (tokenizer.json in `dir`): 77 tokens, padded with <|endoftext|>.
    pub fn clip(dir: &Path) -> Result<Self, ModelError> {
        Self::from_file(
            &dir.join("tokenizer.json"),
            77,
            "<|endoftext|>",
            Some("<|endoftext|>"),
        )
    }

    /// The ids of one prompt, special tokens included, without padding.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self.inner.encode(text, true).map_err(|e| ModelError::Io {
            file: self.file.clone(),
            reason: format!("cannot tokenize {text:?}: {e}"),
        })?;
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
