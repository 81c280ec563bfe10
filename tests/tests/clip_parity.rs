//! The CLIP text encoder against transformers' CLIPTextModel, and the tokenizer against OpenAI's reference
//! algorithm (fixtures made by tests/fixtures/generate/reference.py).

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use codi_core::tensor_ops::max_abs_diff;
use codi_models::tokenizer::TextTokenizer;
use codi_models::CLIPTextModel;
use codi_tests::{fixture, read_safetensors, tensor};

type B = Flex;

#[test]
fn clip_text_model_matches_transformers() {
    let device = Default::default();
    for name in ["clip-tiny", "clip-tiny-eos"] {
        let model = CLIPTextModel::<B>::from_pretrained_dir(&fixture(name), &device)
            .unwrap_or_else(|e| panic!("{e}"));
        let io = read_safetensors(&fixture(&format!("{name}/io.safetensors")));
        let (shape, ids) = &io["in_input_ids"];
        let ids: Vec<i64> = ids.iter().map(|v| *v as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape.clone()), &device);
        let out = model.forward(ids);
        let d1 = max_abs_diff(
            out.last_hidden_state,
            tensor(&io, "last_hidden_state", &device),
        );
        let d2 = max_abs_diff(out.pooled, tensor(&io, "pooler_output", &device));
        assert!(d1 <= 1e-4, "{name}: last_hidden_state max |diff| = {d1}");
        assert!(d2 <= 1e-4, "{name}: pooler_output max |diff| = {d2}");
    }
}

#[test]
fn tokenizer_ids_match_the_reference() {
    let tok = TextTokenizer::clip(&fixture("clip-tokenizer")).unwrap();
    let text = std::fs::read_to_string(fixture("clip-tokenizer/ids.json")).unwrap();
    let want: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(want.len() >= 5);
    for (prompt, ids) in &want {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.ids(prompt).unwrap(), ids, "{prompt:?}");
    }
    // Padding with <|endoftext|> to 77, truncation keeps the end token.
    let device = Default::default();
    let long = "a sneaker ".repeat(60);
    let batch = tok
        .encode_batch::<B>(&["a sneaker", &long], &device)
        .unwrap();
    assert_eq!(batch.dims(), [2, 77]);
    let v: Vec<i64> = batch.into_data().convert::<i64>().to_vec().unwrap();
    let eos = tok.eos_id.unwrap() as i64;
    assert_eq!(&v[..4], &[671, 320, 548, 672]);
    assert!(v[4..77].iter().all(|&i| i == eos));
    assert_eq!(v[77 + 76], eos);
    assert!(TextTokenizer::clip(&fixture("no-such-dir"))
        .unwrap_err()
        .to_string()
        .contains("tokenizer.json"));
}

/// A `tokenizer/` folder as transformers' `CLIPTokenizer` saves it: no `tokenizer.json`.
fn slow_layout(name: &str, config: Option<serde_json::Value>) -> codi_tests::TempDir {
    let dir = codi_tests::TempDir::new(name);
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("clip-tokenizer").join(f), dir.join(f)).unwrap();
    }
    if let Some(c) = config {
        std::fs::write(dir.join("tokenizer_config.json"), c.to_string()).unwrap();
    }
    dir
}

#[test]
fn vocab_and_merges_alone_tokenize_like_the_reference() {
    let dir = slow_layout("clip-slow", None);
    let tok = TextTokenizer::clip(&dir).unwrap();
    let text = std::fs::read_to_string(fixture("clip-tokenizer/ids.json")).unwrap();
    let want: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    for (prompt, ids) in &want {
        let ids: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        assert_eq!(tok.ids(prompt).unwrap(), ids, "{prompt:?}");
    }
    assert_eq!((tok.max_length, tok.pad_id), (77, tok.eos_id.unwrap()));

    // SD-2.x's tokenizer pads with "!" and says so in tokenizer_config.json, as an AddedToken object.
    let config =
        serde_json::json!({"model_max_length": 77, "pad_token": {"content": "!", "lstrip": false}});
    let sd2 = slow_layout("clip-slow-sd2", Some(config));
    let tok = TextTokenizer::clip(&sd2).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(sd2.join("vocab.json")).unwrap()).unwrap();
    assert_eq!(tok.pad_id as u64, vocab["!"].as_u64().unwrap());

    // A broken merges file is an error naming it and the line.
    std::fs::write(sd2.join("merges.txt"), "#version: 0.2\na b\nc\n").unwrap();
    let e = TextTokenizer::clip(&sd2).unwrap_err().to_string();
    assert!(
        e.contains("merges.txt") && e.contains("line 3: a merge is two tokens"),
        "{e}"
    );
}
