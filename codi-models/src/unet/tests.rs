use burn::backend::Flex;
use burn::tensor::Tensor;
use codi_core::tensor_ops::max_abs_diff;

use super::*;
use crate::unet::small_test_config;

type B = Flex;

#[test]
fn forward_keeps_the_latent_shape_for_odd_sizes() {
    let device = Default::default();
    let unet = small_test_config().init::<B>(&device);
    for (h, w) in [(8, 12), (7, 5)] {
        let x = Tensor::<B, 4>::ones([2, 4, h, w], &device);
        let t = Tensor::<B, 1>::from_floats([10.0, 900.0], &device);
        let ctx = Tensor::<B, 3>::ones([2, 3, 32], &device);
        assert_eq!(unet.forward(x, t, ctx).dims(), [2, 4, h, w]);
    }
}

#[test]
fn mix_fusion_at_mu_zero_and_zero_residuals_are_the_identity() {
    let device = Default::default();
    let unet = small_test_config().init::<B>(&device);
    let x = Tensor::<B, 4>::random(
        [1, 4, 8, 8],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    let ctx = Tensor::<B, 3>::ones([1, 3, 32], &device);
    let plain = unet.forward(x.clone(), t.clone(), ctx.clone());
    // Skips: conv_in, (resnet, downsampler) of block 0, resnet of block 1.
    let shapes = [[1, 16, 8, 8], [1, 16, 8, 8], [1, 16, 4, 4], [1, 32, 4, 4]];
    let ones = |s: [usize; 4]| Tensor::<B, 4>::ones(s, &device);
    let mixed = unet.forward_with_residuals(
        x.clone(),
        t.clone(),
        ctx.clone(),
        Some(Residuals {
            down: shapes.iter().map(|s| ones(*s)).collect(),
            mid: ones([1, 32, 4, 4]),
            fusion: Fusion::Mix(Tensor::zeros([1], &device)),
        }),
    );
    assert!(max_abs_diff(plain.clone(), mixed) < 1e-6);
    let added = unet.forward_with_residuals(
        x,
        t,
        ctx,
        Some(Residuals {
            down: shapes.iter().map(|s| Tensor::zeros(*s, &device)).collect(),
            mid: Tensor::zeros([1, 32, 4, 4], &device),
            fusion: Fusion::Add,
        }),
    );
    assert!(max_abs_diff(plain, added) < 1e-6);
}

#[test]
fn config_round_trips_through_diffusers_json() {
    let path = std::path::Path::new("config.json");
    let mut uneven = small_test_config();
    uneven.layers_per_block = vec![1, 2];
    uneven.num_attention_heads = vec![2, 4];
    for c in [
        small_test_config(),
        UNet2DConditionModelConfig::sd15(),
        uneven,
    ] {
        assert_eq!(
            UNet2DConditionModelConfig::from_diffusers(&c.to_diffusers(), path).unwrap(),
            c
        );
    }
    let cn = crate::ControlNetConfig::new(small_test_config()).with_fusion(crate::FusionKind::Mix);
    assert_eq!(
        crate::ControlNetConfig::from_diffusers(&cn.to_diffusers(), path).unwrap(),
        cn
    );
    // A per-block list with the wrong length names the key.
    let mut j = small_test_config().to_diffusers();
    j["layers_per_block"] = serde_json::json!([1, 1, 1]);
    let e = UNet2DConditionModelConfig::from_diffusers(&j, path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers_per_block") && e.contains("config.json"),
        "{e}"
    );
}

#[test]
fn nine_channel_inputs_work_like_sd_inpainting() {
    let device = Default::default();
    let unet = small_test_config().with_in_channels(9).init::<B>(&device);
    let x = Tensor::<B, 4>::ones([1, 9, 8, 8], &device);
    let out = unet.forward(
        x,
        Tensor::from_floats([1.0], &device),
        Tensor::ones([1, 2, 32], &device),
    );
    assert_eq!(out.dims(), [1, 4, 8, 8]);
    assert_eq!(unet.conv_in.weight.dims(), [16, 9, 3, 3]);
}
