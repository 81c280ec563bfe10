//! What is in a diffusers / transformers model folder: the class, a config summary, the parameter count,
//! and whether every key loads — the first thing to run on a checkpoint.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde_json::Value;

use crate::diffusers_json::{class_name, read_json};
use crate::error::ModelError;
use crate::io::LoadOptions;
use crate::{
    AutoencoderKLConfig, CLIPTextConfig, ControlNetConfig, UNet2DConditionModelConfig,
    UNet2DModelConfig,
};

/// What [`inspect`] found in a model folder.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The model class: `_class_name`, or transformers' first `architectures` entry.
    pub class: String,
    /// Selected config entries, as written in config.json.
    pub config: Vec<(String, Value)>,
    /// Number of parameters of the model the config describes.
    pub parameters: usize,
    /// None when every key loaded; otherwise what did not (missing, unused, mismatched).
    pub load_error: Option<String>,
}

const SUMMARY_KEYS: &[&str] = &[
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "cross_attention_dim",
    "attention_head_dim",
    "num_attention_heads",
    "transformer_layers_per_block",
    "use_linear_projection",
    "latent_channels",
    "scaling_factor",
    "conditioning_embedding_out_channels",
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "hidden_act",
];

/// Builds the model a folder's config.json describes, counts it, and tries to load its weights.
pub fn inspect<B: Backend>(dir: &Path, device: &B::Device) -> Result<Inspection, ModelError> {
    let file = dir.join("config.json");
    let json = read_json(&file)?;
    let class = class_name(&json)
        .map(str::to_string)
        .or_else(|| {
            json.get("architectures")
                .and_then(|a| a.get(0))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| {
            (json.get("model_type").and_then(Value::as_str) == Some("clip_text_model"))
                .then(|| "CLIPTextModel".into())
        })
        .ok_or_else(|| ModelError::Config {
            file: file.clone(),
            reason: "no `_class_name` or `architectures` entry: which model is this?".into(),
        })?;
    // Counted before loading, so a checkpoint that does not load still gets its count.
    fn finish<B: Backend, M: Module<B>>(
        model: M,
        dir: &Path,
        options: &LoadOptions,
    ) -> Result<(usize, Option<String>), ModelError> {
        let parameters = model.num_params();
        let load_error = match crate::io::weight_files(dir) {
            Ok(files) => crate::io::load_safetensors_with(model, &files, options)
                .err()
                .map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        Ok((parameters, load_error))
    }
    let plain = LoadOptions::default();
    let (parameters, load_error) = match class.as_str() {
        "UNet2DConditionModel" => finish(
            UNet2DConditionModelConfig::from_diffusers(&json, &file)?.init::<B>(device),
            dir,
            &plain,
        )?,
        "UNet2DModel" => finish(
            UNet2DModelConfig::from_diffusers(&json, &file)?.init::<B>(device),
            dir,
            &plain,
        )?,
        "AutoencoderKL" => finish(
            AutoencoderKLConfig::from_diffusers(&json, &file)?.init::<B>(device),
            dir,
            &plain,
        )?,
        "ControlNetModel" => finish(
            ControlNetConfig::from_diffusers(&json, &file)?.init::<B>(device),
            dir,
            &plain,
        )?,
        "CLIPTextModel" => finish(
            CLIPTextConfig::from_json(&json, &file)?.init::<B>(device),
            dir,
            &crate::clip::load_options(),
        )?,
        other => {
            return Err(ModelError::Unsupported {
                file,
                what: format!("model class {other}"),
            })
        }
    };
    let config = SUMMARY_KEYS
        .iter()
        .filter_map(|k| {
            json.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    Ok(Inspection {
        class,
        config,
        parameters,
        load_error,
    })
}
