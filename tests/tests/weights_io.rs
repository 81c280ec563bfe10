//! diffusers weight I/O: load → save → load is bit-identical with the original key set and shapes; fp16 and
//! sharded files load; missing/unused keys and shape mismatches are errors that name them.

use std::collections::HashMap;
use std::path::Path;

use burn::backend::Flex;
use codi_core::tensor_ops::{max_abs_diff, to_vec};
use codi_models::io::{save_safetensors, weight_files};
use codi_models::{AutoencoderKL, ControlNetModel, UNet2DConditionModel, UNet2DModel};
use codi_tests::{fixture, read_safetensors, tensor, TempDir};
use safetensors::{serialize_to_file, Dtype, View};

type B = Flex;

fn scratch(name: &str) -> TempDir {
    TempDir::new(&format!("weights-io-{name}"))
}

/// A tensor to write with the safetensors crate.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.bytes[..]).into()
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn f32_raw(shape: &[usize], v: &[f32]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn write(path: &Path, tensors: &HashMap<String, Raw>) {
    serialize_to_file(tensors.iter().map(|(k, v)| (k.clone(), v)), None, path).unwrap();
}

fn copy_config(model: &str, to: &Path) {
    std::fs::copy(
        fixture(&format!("diffusers-small/models/{model}/config.json")),
        to.join("config.json"),
    )
    .unwrap();
}

#[test]
fn load_save_load_is_bit_identical_with_the_same_keys_and_shapes() {
    let device = Default::default();
    // Kept until the end: the saved UNet is loaded again below.
    let mut outs = Vec::new();
    for model in ["unet2d_condition", "controlnet", "vae", "unet2d"] {
        let src = fixture(&format!("diffusers-small/models/{model}"));
        outs.push(scratch(model));
        let out = outs.last().unwrap();
        copy_config(model, out);
        let saved = out.join("diffusion_pytorch_model.safetensors");
        match model {
            "unet2d_condition" => save_safetensors(
                &UNet2DConditionModel::<B>::from_diffusers_dir(&src, &device).unwrap(),
                &saved,
            ),
            "controlnet" => save_safetensors(
                &ControlNetModel::<B>::from_diffusers_dir(&src, &device).unwrap(),
                &saved,
            ),
            "vae" => save_safetensors(
                &AutoencoderKL::<B>::from_diffusers_dir(&src, &device).unwrap(),
                &saved,
            ),
            _ => save_safetensors(
                &UNet2DModel::<B>::from_diffusers_dir(&src, &device).unwrap(),
                &saved,
            ),
        }
        .unwrap();
        assert!(
            !out.join("diffusion_pytorch_model.safetensors.tmp").exists(),
            "temporary file left behind"
        );
        let a = read_safetensors(&src.join("diffusion_pytorch_model.safetensors"));
        let b = read_safetensors(&saved);
        let mut ka: Vec<_> = a.keys().collect();
        let mut kb: Vec<_> = b.keys().collect();
        ka.sort();
        kb.sort();
        assert_eq!(ka, kb, "{model}: saved key set differs");
        for (k, (shape, values)) in &a {
            assert_eq!(&b[k].0, shape, "{model}: {k} shape");
            assert!(
                b[k].1
                    .iter()
                    .zip(values)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{model}: {k} values"
            );
        }
    }
    // And the reloaded UNet computes exactly what the original did.
    let io = read_safetensors(&fixture("diffusers-small/io/unet2d_condition.safetensors"));
    let run = |dir: &Path| {
        let unet = UNet2DConditionModel::<B>::from_diffusers_dir(dir, &device).unwrap();
        to_vec(unet.forward(
            tensor(&io, "in_sample", &device),
            tensor(&io, "in_timestep", &device),
            tensor(&io, "in_encoder_hidden_states", &device),
        ))
    };
    let saved = outs[0].to_path_buf();
    assert_eq!(
        run(&fixture("diffusers-small/models/unet2d_condition")),
        run(&saved)
    );
}

#[test]
fn fp16_and_sharded_checkpoints_load() {
    let device = Default::default();
    let src = read_safetensors(&fixture(
        "diffusers-small/models/vae/diffusion_pytorch_model.safetensors",
    ));
    let io = read_safetensors(&fixture("diffusers-small/io/vae.safetensors"));
    let x = tensor::<B, 4>(&io, "in_sample", &device);
    let want = tensor::<B, 4>(&io, "latent_mean", &device);

    // fp16: the same weights rounded to half precision.
    let dir = scratch("fp16");
    copy_config("vae", &dir);
    let half: HashMap<String, Raw> = src
        .iter()
        .map(|(k, (shape, v))| {
            let bytes = v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect();
            (
                k.clone(),
                Raw {
                    dtype: Dtype::F16,
                    shape: shape.clone(),
                    bytes,
                },
            )
        })
        .collect();
    write(&dir.join("diffusion_pytorch_model.fp16.safetensors"), &half);
    let vae =
        AutoencoderKL::<B>::from_diffusers_dir(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
    let diff = max_abs_diff(vae.encode(x.clone()).mean, want.clone());
    assert!(diff < 2e-2, "fp16 weights give latent mean off by {diff}");

    // Sharded: two files and an index.
    let dir = scratch("sharded");
    copy_config("vae", &dir);
    let mut shards: [HashMap<String, Raw>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (k, (shape, v)) in &src {
        let i = usize::from(k.starts_with("decoder"));
        shards[i].insert(k.clone(), f32_raw(shape, v));
        map.insert(k.clone(), format!("shard-{i}.safetensors").into());
    }
    for (i, s) in shards.iter().enumerate() {
        write(&dir.join(format!("shard-{i}.safetensors")), s);
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    assert_eq!(weight_files(&dir).unwrap().len(), 2);
    let vae =
        AutoencoderKL::<B>::from_diffusers_dir(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
    assert!(max_abs_diff(vae.encode(x).mean, want) < 1e-4);
}

#[test]
fn missing_unused_and_misshapen_keys_are_named() {
    let device = Default::default();
    let src = read_safetensors(&fixture(
        "diffusers-small/models/unet2d_condition/diffusion_pytorch_model.safetensors",
    ));
    let dir = scratch("broken");
    copy_config("unet2d_condition", &dir);
    let mut t: HashMap<String, Raw> = src
        .iter()
        .map(|(k, (s, v))| (k.clone(), f32_raw(s, v)))
        .collect();
    t.remove("conv_in.weight");
    t.insert("extra.weight".into(), f32_raw(&[2], &[0.0, 1.0]));
    t.insert("conv_out.bias".into(), f32_raw(&[5], &[0.0; 5]));
    let file = dir.join("diffusion_pytorch_model.safetensors");
    write(&file, &t);
    let err = UNet2DConditionModel::<B>::from_diffusers_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("missing keys") && err.contains("conv_in.weight"),
        "{err}"
    );
    assert!(
        err.contains("unused keys") && err.contains("extra.weight"),
        "{err}"
    );
    assert!(
        err.contains("conv_out.bias") && err.contains("[4]") && err.contains("[5]"),
        "{err}"
    );

    // A config that does not parse names its file; an unsupported option is named too.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["class_embed_type"] = "timestep".into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = UNet2DConditionModel::<B>::from_diffusers_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("class_embed_type"),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = UNet2DConditionModel::<B>::from_diffusers_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );
    let err = UNet2DConditionModel::<B>::from_diffusers_dir(&scratch("empty"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}
