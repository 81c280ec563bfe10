//! codi's export checked by diffusers: `tests/fixtures/sd-tiny-controlnet` is `codi distill --task controlnet`
//! of the tiny SD pipeline; `tests/fixtures/generate/controlnet_export.py` loads it with
//! `ControlNetModel.from_pretrained` (no missing or unexpected keys) into a `StableDiffusionControlNetPipeline`
//! and stores diffusers' outputs for fixed inputs in `sd-tiny-controlnet-reference/io.safetensors`. codi's
//! pipeline must give the same (≤ 1e-4).

use burn::backend::Flex;
use burn::tensor::Tensor;
use codi_core::tensor_ops::max_abs_diff;
use codi_core::{Guided, Sampler, SamplerKind, SeededNoise};
use codi_pipelines::conditional::CondDenoiser;
use codi_pipelines::ConditionalPipeline;
use codi_tests::{fixture, read_safetensors, tensor};

type B = Flex;

fn check(what: &str, got: Tensor<B, 4>, want: Tensor<B, 4>) {
    let scale = want.clone().abs().max().into_scalar();
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max |diff| = {d:e} (max |reference| = {scale:.3})");
    assert!(d <= 1e-4, "{what}: max |diff| = {d}");
}

#[test]
fn the_exported_adapter_runs_in_diffusers_as_in_codi() {
    let device = Default::default();
    let pipe = ConditionalPipeline::<B>::load(
        &fixture("sd-tiny"),
        &fixture("sd-tiny-controlnet"),
        &device,
    )
    .unwrap();
    let io = read_safetensors(&fixture("sd-tiny-controlnet-reference/io.safetensors"));
    let get = |name: &str| -> Tensor<B, 4> { tensor(&io, name, &device) };
    let text: Tensor<B, 3> = tensor(&io, "text", &device);
    let uncond: Tensor<B, 3> = tensor(&io, "uncond_text", &device);
    let prompt = "a red circle on a green background";
    let d = max_abs_diff(
        pipe.base.encode_prompts(&[prompt], &device).unwrap(),
        text.clone(),
    );
    assert!(d <= 1e-4, "text encoder: {d}");
    let (z, cond) = (get("initial_latents"), get("condition"));

    // The adapter's residuals, and the UNet with and without them.
    let t = Tensor::<B, 1>::from_floats([751.0], &device);
    let r = pipe
        .net
        .adapter
        .forward(z.clone(), t.clone(), text.clone(), cond.clone(), 1.0);
    assert_eq!(r.down.len(), 4);
    for (i, down) in r.down.iter().enumerate() {
        check(
            &format!("down residual {i}"),
            down.clone(),
            get(&format!("down_{i}")),
        );
    }
    check("mid residual", r.mid.clone(), get("mid"));
    let adapted = pipe
        .net
        .forward(z.clone(), t.clone(), text.clone(), cond.clone());
    check("adapted prediction", adapted.clone(), get("adapted_eps"));
    let plain = pipe.net.unet.forward(z.clone(), t, text.clone());
    check("plain prediction", plain.clone(), get("plain_eps"));
    assert!(
        max_abs_diff(adapted, plain) > 1e-2,
        "the adapter changes the prediction"
    );

    // StableDiffusionControlNetPipeline: DDIM, 4 steps, from the same latents, guidance 1 and 7.5.
    let denoiser = |text| CondDenoiser {
        net: &pipe.net,
        text,
        cond: cond.clone(),
        prediction_type: pipe.base.prediction_type,
    };
    for (scale, name) in [(1.0, "final_latents_g1"), (7.5, "final_latents_g7_5")] {
        let guided = Guided {
            cond: denoiser(text.clone()),
            uncond: denoiser(uncond.clone()),
            scale,
        };
        let latents = Sampler::new(SamplerKind::ddim(), 4)
            .sample(
                &pipe.base.schedule,
                &guided,
                z.clone(),
                &mut SeededNoise::new(0),
                |_, _| {},
            )
            .unwrap();
        check(name, latents.clone(), get(name));
        if scale > 1.0 {
            check(
                "images, guidance 7.5",
                pipe.base.decode(latents),
                get("images_g7_5"),
            );
        }
    }
}
