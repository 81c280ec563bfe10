//! codi-models' UNet2DConditionModel against diffusers (fixtures/diffusers-small, diffusers 0.42.1):
//! same config.json, same safetensors weights, same inputs → outputs within 1e-4.

use burn::backend::Flex;
use codi_core::tensor_ops::max_abs_diff;
use codi_models::{AutoencoderKL, ControlNetModel, UNet2DConditionModel, UNet2DModel};
use codi_tests::{fixture, read_safetensors, tensor};

type B = Flex;

#[test]
fn unet2d_condition_matches_diffusers() {
    let device = Default::default();
    let unet = UNet2DConditionModel::<B>::from_diffusers_dir(
        &fixture("diffusers-small/models/unet2d_condition"),
        &device,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let io = read_safetensors(&fixture("diffusers-small/io/unet2d_condition.safetensors"));
    let out = unet.forward(
        tensor(&io, "in_sample", &device),
        tensor(&io, "in_timestep", &device),
        tensor(&io, "in_encoder_hidden_states", &device),
    );
    let diff = max_abs_diff(out, tensor(&io, "out", &device));
    assert!(diff <= 1e-4, "max |diff| = {diff}");
}

#[test]
fn controlnet_residuals_and_controlled_unet_match_diffusers() {
    let device = Default::default();
    let dir = fixture("diffusers-small/models");
    let unet =
        UNet2DConditionModel::<B>::from_diffusers_dir(&dir.join("unet2d_condition"), &device)
            .unwrap();
    let cn = ControlNetModel::<B>::from_diffusers_dir(&dir.join("controlnet"), &device)
        .unwrap_or_else(|e| panic!("{e}"));
    let io = read_safetensors(&fixture("diffusers-small/io/controlnet.safetensors"));
    let (x, t, ctx) = (
        tensor::<B, 4>(&io, "in_sample", &device),
        tensor::<B, 1>(&io, "in_timestep", &device),
        tensor::<B, 3>(&io, "in_encoder_hidden_states", &device),
    );
    let r = cn.forward(
        x.clone(),
        t.clone(),
        ctx.clone(),
        tensor(&io, "in_controlnet_cond", &device),
        1.0,
    );
    assert_eq!(r.down.len(), 4);
    for (i, d) in r.down.iter().enumerate() {
        let diff = max_abs_diff(d.clone(), tensor(&io, &format!("down_{i}"), &device));
        assert!(diff <= 1e-4, "down residual {i}: max |diff| = {diff}");
    }
    let diff = max_abs_diff(r.mid.clone(), tensor(&io, "mid", &device));
    assert!(diff <= 1e-4, "mid residual: max |diff| = {diff}");
    let out = unet.forward_with_residuals(x, t, ctx, Some(r));
    let diff = max_abs_diff(out, tensor(&io, "unet_with_control_out", &device));
    assert!(diff <= 1e-4, "UNet with control: max |diff| = {diff}");
}

#[test]
fn vae_matches_diffusers() {
    let device = Default::default();
    let vae =
        AutoencoderKL::<B>::from_diffusers_dir(&fixture("diffusers-small/models/vae"), &device)
            .unwrap_or_else(|e| panic!("{e}"));
    let io = read_safetensors(&fixture("diffusers-small/io/vae.safetensors"));
    let x = tensor::<B, 4>(&io, "in_sample", &device);
    let check = |name: &str, got: burn::tensor::Tensor<B, 4>| {
        let diff = max_abs_diff(got, tensor(&io, name, &device));
        assert!(diff <= 1e-4, "{name}: max |diff| = {diff}");
    };
    check("moments", vae.moments(x.clone()));
    let post = vae.encode(x);
    check("latent_mean", post.mean.clone());
    check("latent_logvar", post.logvar.clone());
    check("decoded_from_mean", vae.decode(post.mode()));
    check("forward_mode", vae.decode(post.mode()));
}

#[test]
fn unet2d_matches_diffusers() {
    let device = Default::default();
    let unet =
        UNet2DModel::<B>::from_diffusers_dir(&fixture("diffusers-small/models/unet2d"), &device)
            .unwrap_or_else(|e| panic!("{e}"));
    let io = read_safetensors(&fixture("diffusers-small/io/unet2d.safetensors"));
    let out = unet.forward(
        tensor(&io, "in_sample", &device),
        tensor(&io, "in_timestep", &device),
    );
    let diff = max_abs_diff(out, tensor(&io, "out", &device));
    assert!(diff <= 1e-4, "max |diff| = {diff}");
}
