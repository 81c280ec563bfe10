//! The embedded default's tokenizer conventions: a word-level `tokenizer.json` (written by codi-train from the
//! training captions) with these special tokens and prompt length.

use std::path::Path;

use codi_models::tokenizer::TextTokenizer;

use crate::error::PipelineError;

/// Pads prompts to the fixed length.
pub const PAD: &str = "<pad>";
/// Stands for a word outside the vocabulary.
pub const UNK: &str = "<unk>";
/// Starts every prompt.
pub const BOS: &str = "<bos>";
/// Ends every prompt. Not id 2: CLIP reads `eos_token_id == 2` as "take the largest id" (legacy configs).
pub const EOS: &str = "<eos>";
/// Tokens per prompt of the embedded default (the longest scene caption has 13 with `<bos>`/`<eos>`).
pub const MAX_LENGTH: usize = 16;

/// Loads a pipeline's tokenizer from its `tokenizer/` folder: a CLIP tokenizer as transformers saves it (the
/// folder has `tokenizer_config.json` or `vocab.json`: [`TextTokenizer::clip`]), else the embedded default's
/// word-level `tokenizer.json` with the conventions above.
pub fn load_tokenizer(dir: &Path) -> Result<TextTokenizer, PipelineError> {
    if dir.join("tokenizer_config.json").exists() || dir.join("vocab.json").exists() {
        return Ok(TextTokenizer::clip(dir)?);
    }
    Ok(TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        MAX_LENGTH,
        PAD,
        Some(EOS),
    )?)
}
