//! The embedded default's configs (committed as `configs/pretrain/*.json`; a test keeps them equal).

use codi_core::{NoiseScheduleConfig, PredictionType};
use codi_models::classifier::ClassifierConfig;
use codi_models::clip::HiddenAct;
use codi_models::unet::{DownBlockType, UpBlockType};
use codi_models::{AutoencoderKLConfig, CLIPTextConfig, UNet2DConditionModelConfig};

use super::classifier::ClassifierPretrainConfig;
use super::teacher::TeacherPretrainConfig;
use super::vae::VaePretrainConfig;
use crate::data::mixed::{DataConfig, NUM_LABELS};
use crate::training::lr::CosineScheduleConfig;
use crate::training::TrainLoopConfig;

/// f = 4: 32×32×3 → 8×8×4.
pub fn vae() -> VaePretrainConfig {
    VaePretrainConfig::new(
        AutoencoderKLConfig::new(vec![32, 64, 64]).with_norm_num_groups(8),
        TrainLoopConfig::new()
            .with_batch_size(16)
            .with_num_epochs(32)
            .with_steps_per_epoch(250)
            .with_learning_rate(1e-3)
            .with_lr_schedule(Some(
                CosineScheduleConfig::new()
                    .with_warmup_steps(100)
                    .with_final_ratio(0.01),
            )),
        DataConfig::new(),
    )
}

pub fn classifier() -> ClassifierPretrainConfig {
    ClassifierPretrainConfig::new(
        ClassifierConfig::new(NUM_LABELS).with_block_out_channels(vec![16, 32, 64, 128]),
        TrainLoopConfig::new()
            .with_batch_size(64)
            .with_num_epochs(15)
            .with_steps_per_epoch(400)
            .with_valid_items(2048)
            .with_learning_rate(2e-3)
            .with_weight_decay(1e-4)
            .with_lr_schedule(Some(CosineScheduleConfig::new().with_warmup_steps(200))),
        DataConfig::new(),
    )
}

/// A two-level cross-attention UNet on 8×8×4 latents and a two-layer CLIP text encoder over the word vocabulary.
pub fn teacher() -> TeacherPretrainConfig {
    let unet = UNet2DConditionModelConfig::new(
        vec![
            DownBlockType::CrossAttnDownBlock2D,
            DownBlockType::CrossAttnDownBlock2D,
        ],
        vec![
            UpBlockType::CrossAttnUpBlock2D,
            UpBlockType::CrossAttnUpBlock2D,
        ],
        vec![48, 96],
        vec![1, 1],
        64,
        vec![1, 1],
        vec![2, 4],
    )
    .with_norm_num_groups(16);
    let text = CLIPTextConfig::new()
        .with_vocab_size(crate::text::vocabulary().len())
        .with_hidden_size(64)
        .with_intermediate_size(128)
        .with_num_hidden_layers(2)
        .with_num_attention_heads(4)
        .with_max_position_embeddings(crate::text::MAX_LENGTH)
        .with_hidden_act(HiddenAct::Gelu)
        .with_eos_token_id(3);
    TeacherPretrainConfig::new(
        unet,
        text,
        TrainLoopConfig::new()
            .with_batch_size(64)
            .with_num_epochs(5)
            .with_steps_per_epoch(250)
            .with_learning_rate(1e-3)
            .with_weight_decay(1e-4),
        DataConfig::new(),
    )
    .with_schedule(NoiseScheduleConfig::sd15())
    .with_prediction_type(PredictionType::Epsilon)
}

#[cfg(test)]
mod tests {

    fn same(file: &str, preset: String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/pretrain")
            .join(file);
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let preset: serde_json::Value = serde_json::from_str(&preset).unwrap();
        assert_eq!(
            committed,
            preset,
            "{} differs from the preset: regenerate it with `codi pretrain … --print-config`",
            path.display()
        );
    }

    #[test]
    fn committed_configs_equal_the_presets() {
        same("vae.json", super::vae().to_string());
        same("classifier.json", super::classifier().to_string());
        same("teacher.json", super::teacher().to_string());
        assert_eq!(super::teacher().text_encoder.eos_token_id, 3);
    }
}
