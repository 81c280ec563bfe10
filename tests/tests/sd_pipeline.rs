//! A Stable Diffusion pipeline folder as diffusers and transformers save it (`tests/fixtures/sd-tiny`, made by
//! `tests/fixtures/generate/sd_pipeline.py`): its tokenizer (vocab.json + merges.txt, no tokenizer.json) gives
//! transformers' CLIPTokenizer ids, its text encoder transformers' hidden states, and a 4-step DDIM run with
//! guidance 7.5 from fixed latents StableDiffusionPipeline's latents and images.

use burn::backend::Flex;
use burn::tensor::Tensor;
use codi_core::tensor_ops::max_abs_diff;
use codi_core::{Guided, Sampler, SamplerKind, SeededNoise};
use codi_pipelines::text_to_image::TextDenoiser;
use codi_pipelines::TextToImage;
use codi_tests::{fixture, read_safetensors, safetensors_bytes, tensor};

type B = Flex;

#[test]
fn token_ids_equal_transformers_clip_tokenizer() {
    let pipe = TextToImage::<B>::load(&fixture("sd-tiny"), &Default::default()).unwrap();
    let text = std::fs::read_to_string(fixture("sd-tiny-reference/ids.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompts = reference["prompts"].as_object().unwrap();
    assert!(prompts.len() >= 20);
    let device = Default::default();
    for (prompt, want) in prompts {
        let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
        assert_eq!(pipe.tokenizer.ids(prompt).unwrap(), ids, "{prompt:?}");
        let padded: Vec<i64> = serde_json::from_value(want["padded"].clone()).unwrap();
        let got = pipe
            .tokenizer
            .encode_batch::<B>(&[prompt], &device)
            .unwrap();
        assert_eq!(
            got.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
            padded,
            "{prompt:?} padded"
        );
    }
}

#[test]
fn text_encoder_and_a_four_step_ddim_run_equal_stable_diffusion_pipeline() {
    let device = Default::default();
    let pipe = TextToImage::<B>::load(&fixture("sd-tiny"), &device).unwrap();
    let io = read_safetensors(&fixture("sd-tiny-reference/io.safetensors"));
    let prompts = ["a sneaker", "a photo of a red sphere"];
    let hidden = pipe.encode_prompts(&prompts, &device).unwrap();
    let d = max_abs_diff(hidden.clone(), tensor(&io, "last_hidden_state", &device));
    eprintln!("last_hidden_state max |diff| = {d:e}");
    assert!(d <= 1e-4, "last_hidden_state max |diff| = {d}");

    let z: Tensor<B, 4> = tensor(&io, "initial_latents", &device);
    let t = Tensor::<B, 1>::from_floats([751.0, 751.0], &device);
    let eps = pipe.unet.forward(z.clone(), t, hidden.clone());
    let d = max_abs_diff(eps, tensor(&io, "first_eps", &device));
    assert!(d <= 1e-4, "the UNet's first prediction max |diff| = {d}");

    let denoiser = |text| TextDenoiser {
        unet: &pipe.unet,
        text,
        prediction_type: pipe.prediction_type,
    };
    let guided = Guided {
        cond: denoiser(hidden),
        uncond: denoiser(pipe.encode_prompts(&["", ""], &device).unwrap()),
        scale: 7.5,
    };
    let latents = Sampler::new(SamplerKind::ddim(), 4)
        .sample(
            &pipe.schedule,
            &guided,
            z,
            &mut SeededNoise::new(0),
            |_, _| {},
        )
        .unwrap();
    let d = max_abs_diff(latents.clone(), tensor(&io, "final_latents", &device));
    eprintln!("final latents max |diff| = {d:e}");
    assert!(d <= 1e-4, "final latents max |diff| = {d}");
    let d = max_abs_diff(pipe.decode(latents), tensor(&io, "images", &device));
    eprintln!("images max |diff| = {d:e}");
    assert!(d <= 1e-4, "images max |diff| = {d}");
}

#[test]
fn the_same_folder_with_a_v_prediction_scheduler_samples_as_diffusers_does() {
    let device = Default::default();
    let dir = codi_tests::TempDir::new("sd-tiny-v");
    copy_dir(&fixture("sd-tiny"), &dir);
    let file = dir.join("scheduler/scheduler_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["prediction_type"] = "v_prediction".into();
    std::fs::write(&file, config.to_string()).unwrap();
    let pipe = TextToImage::<B>::load(&dir, &device).unwrap();
    assert_eq!(pipe.prediction_type, codi_core::PredictionType::VPrediction);
    let io = read_safetensors(&fixture("sd-tiny-reference/io.safetensors"));
    let denoiser = |prompts: &[&str]| TextDenoiser {
        unet: &pipe.unet,
        text: pipe.encode_prompts(prompts, &device).unwrap(),
        prediction_type: pipe.prediction_type,
    };
    let guided = Guided {
        cond: denoiser(&["a sneaker", "a photo of a red sphere"]),
        uncond: denoiser(&["", ""]),
        scale: 7.5,
    };
    let latents = Sampler::new(SamplerKind::ddim(), 4)
        .sample(
            &pipe.schedule,
            &guided,
            tensor(&io, "initial_latents", &device),
            &mut SeededNoise::new(0),
            |_, _| {},
        )
        .unwrap();
    let d = max_abs_diff(latents, tensor(&io, "final_latents_v_prediction", &device));
    eprintln!("v-prediction final latents max |diff| = {d:e}");
    assert!(d <= 1e-4, "v-prediction final latents max |diff| = {d}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn a_folder_of_fp16_variant_weights_loads_and_predicts_as_its_fp32_original() {
    // diffusers' `variant="fp16"` files: `diffusion_pytorch_model.fp16.safetensors`, `model.fp16.safetensors`.
    let dir = codi_tests::TempDir::new("sd-tiny-fp16");
    copy_dir(&fixture("sd-tiny"), &dir);
    for (part, stem) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ] {
        let fp32 = dir.join(part).join(format!("{stem}.safetensors"));
        let fp16 = safetensors_bytes(&read_safetensors(&fp32), safetensors::Dtype::F16);
        std::fs::write(
            dir.join(part).join(format!("{stem}.fp16.safetensors")),
            fp16,
        )
        .unwrap();
        std::fs::remove_file(fp32).unwrap();
    }
    let device = Default::default();
    let pipe = TextToImage::<B>::load(&dir, &device).unwrap();
    let io = read_safetensors(&fixture("sd-tiny-reference/io.safetensors"));
    let hidden = pipe
        .encode_prompts(&["a sneaker", "a photo of a red sphere"], &device)
        .unwrap();
    let t = Tensor::<B, 1>::from_floats([751.0, 751.0], &device);
    let eps = pipe
        .unet
        .forward(tensor(&io, "initial_latents", &device), t, hidden);
    // The weights lost their low bits, nothing else: fp16's relative precision, not a wrong layer.
    let d = max_abs_diff(eps, tensor(&io, "first_eps", &device));
    eprintln!("fp16 variant: the UNet's first prediction max |diff| = {d:e}");
    assert!(d <= 5e-3, "fp16 variant: max |diff| = {d}");
}
