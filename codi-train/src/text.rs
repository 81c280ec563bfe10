//! The word-level vocabulary of the embedded default's text encoder, written as a `tokenizer.json` that the
//! `tokenizers` crate (and Hugging Face's) reads: lower-casing, whitespace/punctuation splitting, a
//! `<bos> … <eos>` template, and every word of the captions and of the editing instructions.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::data::fashion_mnist::{caption, CLASSES};
use crate::data::scenes::{Shape, COLOURS, FLOORS};
use crate::error::TrainError;
pub use codi_pipelines::tokenizer::{load_tokenizer, BOS, EOS, MAX_LENGTH, PAD, UNK};

/// Instructions of the editing task; each has an exact ground-truth edit.
pub const EDIT_INSTRUCTIONS: [&str; 10] = [
    "flip it horizontally",
    "flip it vertically",
    "make it darker",
    "make it brighter",
    "invert the colours",
    "move it left",
    "move it right",
    "zoom in",
    "zoom out",
    "rotate it a quarter turn",
];

const SPECIAL: [&str; 4] = [PAD, UNK, BOS, EOS];

/// Words as the tokenizer splits them (`\w+|[^\w\s]+`, lower-cased).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word: Option<bool> = None;
    for ch in text.to_lowercase().chars() {
        if ch.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur_word = None;
            continue;
        }
        let is_word = ch.is_alphanumeric() || ch == '_';
        if cur_word.is_some_and(|w| w != is_word) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
        cur_word = Some(is_word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every text the embedded default is trained or evaluated on.
pub fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = (0..CLASSES.len()).map(caption).collect();
    texts.extend(EDIT_INSTRUCTIONS.iter().map(|s| s.to_string()));
    let mut scene_words = vec!["a an and on floor".to_string()];
    scene_words.extend(COLOURS.iter().map(|c| c.0.to_string()));
    scene_words.extend(FLOORS.iter().map(|c| c.0.to_string()));
    scene_words.extend(Shape::ALL.iter().map(|s| s.name().to_string()));
    texts.extend(scene_words);
    texts
}

/// The vocabulary: special tokens, then the corpus's words in sorted order.
pub fn vocabulary() -> Vec<String> {
    let words: BTreeSet<String> = corpus().iter().flat_map(|t| words(t)).collect();
    SPECIAL.iter().map(|s| s.to_string()).chain(words).collect()
}

/// The `tokenizer.json` document.
pub fn tokenizer_json() -> Value {
    let vocab = vocabulary();
    let ids: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = SPECIAL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let special = |s: &str| json!({"SpecialToken": {"id": s, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let id_of = |s: &str| SPECIAL.iter().position(|x| *x == s).expect("special");
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(BOS), seq("A"), special(EOS)],
            "pair": [special(BOS), seq("A"), special(EOS), seq("B"), special(EOS)],
            "special_tokens": {
                BOS: {"id": BOS, "ids": [id_of(BOS)], "tokens": [BOS]},
                EOS: {"id": EOS, "ids": [id_of(EOS)], "tokens": [EOS]},
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": UNK}
    })
}

/// Writes `tokenizer.json` into `dir` (through a temporary file).
pub fn write_tokenizer(dir: &Path) -> Result<std::path::PathBuf, TrainError> {
    let file = dir.join("tokenizer.json");
    let err = |e: std::io::Error| TrainError::Data {
        file: file.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join("tokenizer.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&tokenizer_json()).expect("JSON"),
    )
    .map_err(err)?;
    std::fs::rename(&tmp, &file).map_err(err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scenes::Scenes;
    use burn::data::dataset::Dataset;

    #[test]
    fn every_caption_and_instruction_tokenizes_without_unknown_words() {
        let dir = std::env::temp_dir().join(format!("codi-tok-{}", std::process::id()));
        write_tokenizer(&dir).unwrap();
        let tok = load_tokenizer(&dir).unwrap();
        assert_eq!(tok.vocab_size(), vocabulary().len());
        let unk = vocabulary().iter().position(|w| w == UNK).unwrap() as u32;
        let scenes = Scenes::train(40);
        let mut texts = corpus();
        texts.extend((0..scenes.len()).map(|i| scenes.get(i).unwrap().image.caption));
        for t in &texts {
            let ids = tok.ids(t).unwrap();
            assert!(!ids.contains(&unk), "{t:?} → {ids:?}");
            assert_eq!(ids.len(), words(t).len() + 2, "{t:?}");
            assert!(ids.len() <= MAX_LENGTH, "{t:?}");
            assert_eq!(ids[0] as usize, 2);
            assert_eq!(*ids.last().unwrap() as usize, 3);
        }
        // Unknown words map to <unk>; the empty prompt is <bos> <eos>.
        assert_eq!(tok.ids("a zebra").unwrap()[2], unk);
        assert_eq!(tok.ids("").unwrap(), vec![2, 3]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
