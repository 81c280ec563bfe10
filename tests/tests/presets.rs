//! The SD-1.5 presets, built from config alone, have exactly diffusers'/transformers' parameter counts
//! (fixtures/sd15_param_counts.json, computed by tests/fixtures/generate/reference.py).

use std::time::Instant;

use burn::backend::Flex;
use burn::module::Module;
use codi_models::{
    AutoencoderKLConfig, CLIPTextConfig, ControlNetConfig, UNet2DConditionModelConfig,
};
use codi_tests::fixture;

type B = Flex;

#[test]
fn sd15_parameter_counts_equal_the_reference() {
    let device = Default::default();
    let text = std::fs::read_to_string(fixture("sd15_param_counts.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| want[k].as_u64().unwrap() as usize;
    let t = Instant::now();
    // Parameters are initialised lazily, so counting does not allocate the 3.4 GB of weights.
    assert_eq!(
        UNet2DConditionModelConfig::sd15()
            .init::<B>(&device)
            .num_params(),
        n("unet")
    );
    assert_eq!(
        ControlNetConfig::new(UNet2DConditionModelConfig::sd15())
            .init::<B>(&device)
            .num_params(),
        n("controlnet")
    );
    assert_eq!(
        AutoencoderKLConfig::sd15().init::<B>(&device).num_params(),
        n("vae")
    );
    assert_eq!(
        CLIPTextConfig::sd15().init::<B>(&device).num_params(),
        n("text_encoder")
    );
    eprintln!(
        "built and counted the SD-1.5 presets in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
