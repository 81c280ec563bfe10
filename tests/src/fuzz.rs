//! The bodies of codi's fuzz targets: one per kind of file a user feeds codi. `fuzz/` runs each under
//! libFuzzer (`cargo fuzz run -s none <target>`), and `tests/tests/fuzz_corpus.rs` replays every input in
//! `fuzz/corpus/<target>` and `fuzz/regressions/<target>` through the same function.
//!
//! A target feeds its bytes to the loader exactly as a user's file would reach it (written under the name codi
//! looks for, read by the loader) and goes on as codi does with what loaded. It may return an error; it must
//! not panic, hang or allocate without bound, and an error about the file must name it.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::Module;
use burn::tensor::backend::Backend;
use codi_core::backend::CpuBackend;
use codi_models::layers::{Conv2d, Conv2dConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig};

type B = CpuBackend;

/// A target: its name (the folder of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target, by name.
pub const TARGETS: &[Target] = &[
    ("config_unet", config_unet),
    ("config_unet2d", config_unet2d),
    ("config_controlnet", config_controlnet),
    ("config_vae", config_vae),
    ("config_clip", config_clip),
    ("config_classifier", config_classifier),
    ("config_scheduler", config_scheduler),
    ("safetensors", safetensors),
    ("safetensors_index", safetensors_index),
    ("tokenizer", tokenizer),
    ("clip_tokenizer_files", clip_tokenizer_files),
    ("idx", idx),
    ("png", png),
    ("image", image),
    ("image_folder", image_folder),
    ("adapter_info", adapter_info),
    ("config_distill", config_distill),
    ("config_pretrain_teacher", config_pretrain_teacher),
    ("config_pretrain_vae", config_pretrain_vae),
    ("config_pretrain_classifier", config_pretrain_classifier),
];

/// The body of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// This process's scratch folder for `target` (one per target: the replay test runs targets in parallel).
fn scratch(target: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root =
        ROOT.get_or_init(|| std::env::temp_dir().join(format!("codi-fuzz-{}", std::process::id())));
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("the scratch folder can be made");
    dir
}

/// Writes the input as `dir/name`. → the file
fn put(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, data).expect("the scratch file can be written");
    file
}

/// An error about `file` must say which file it is.
fn names_file(error: impl Display, file: &Path) {
    let message = error.to_string();
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(
        message.contains(name),
        "the error does not name {name}: {message}"
    );
}

/// Runs a model-config target: `config.json` read and parsed as the folder loaders do, then the model
/// built (its parameters stay lazy, as they are until weights load).
fn model_config<C>(
    target: &str,
    data: &[u8],
    parse: impl Fn(&serde_json::Value, &Path) -> Result<C, codi_models::ModelError>,
    init: impl Fn(&C),
) {
    let file = put(&scratch(target), "config.json", data);
    let config = codi_models::diffusers_json::read_json(&file).and_then(|v| parse(&v, &file));
    match config {
        Ok(c) => init(&c),
        Err(e) => names_file(e, &file),
    }
}

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

/// `unet/config.json` (UNet2DConditionModel).
pub fn config_unet(data: &[u8]) {
    model_config(
        "config_unet",
        data,
        codi_models::UNet2DConditionModelConfig::from_diffusers,
        |c| drop(c.init::<B>(&device())),
    );
}

/// An unconditional UNet2DModel's `config.json`.
pub fn config_unet2d(data: &[u8]) {
    model_config(
        "config_unet2d",
        data,
        codi_models::UNet2DModelConfig::from_diffusers,
        |c| drop(c.init::<B>(&device())),
    );
}

/// `controlnet/config.json`.
pub fn config_controlnet(data: &[u8]) {
    model_config(
        "config_controlnet",
        data,
        codi_models::ControlNetConfig::from_diffusers,
        |c| drop(c.init::<B>(&device())),
    );
}

/// `vae/config.json` (AutoencoderKL).
pub fn config_vae(data: &[u8]) {
    model_config(
        "config_vae",
        data,
        codi_models::AutoencoderKLConfig::from_diffusers,
        |c| drop(c.init::<B>(&device())),
    );
}

/// `text_encoder/config.json` (CLIPTextModel).
pub fn config_clip(data: &[u8]) {
    model_config(
        "config_clip",
        data,
        codi_models::CLIPTextConfig::from_json,
        |c| drop(c.init::<B>(&device())),
    );
}

/// `classifier/config.json` (the evaluation classifier).
pub fn config_classifier(data: &[u8]) {
    model_config(
        "config_classifier",
        data,
        codi_models::classifier::ClassifierConfig::from_json,
        |c| drop(c.init::<B>(&device())),
    );
}

/// `scheduler/scheduler_config.json`: read, the noise schedule built and a 4-step sampling grid on it.
pub fn config_scheduler(data: &[u8]) {
    let file = put(&scratch("config_scheduler"), "scheduler_config.json", data);
    match codi_pipelines::SchedulerFile::read(&file) {
        Ok(s) => {
            if let Ok(schedule) = s.schedule.init() {
                let _ = codi_core::grid::ddim_timesteps(
                    schedule.num_train_timesteps(),
                    4,
                    codi_core::grid::TimestepSpacing::Leading,
                    1,
                );
            }
        }
        Err(e) => names_file(e, &file),
    }
}

/// A few layers whose weights load the way every model's do (norms renamed, any float dtype to f32).
#[derive(Module, Debug, Clone)]
pub struct SmallModel<Bk: Backend> {
    proj: Linear<Bk>,
    conv: Conv2d<Bk>,
    norm: GroupNorm<Bk>,
}

impl<Bk: Backend> SmallModel<Bk> {
    /// proj 4 → 3, conv 2 → 2 (3×3), norm 1 group of 2.
    pub fn init(device: &Bk::Device) -> Self {
        Self {
            proj: LinearConfig::new(4, 3).init(device),
            conv: Conv2dConfig::new([2, 2], [3, 3]).init(device),
            norm: GroupNormConfig::new(1, 2).init(device),
        }
    }
}

/// Loads the weight files of `dir` into a [`SmallModel`] and digests them, as loading a model folder and
/// checking an adapter's backbone do.
fn load_weights(dir: &Path, blame: &Path) {
    let loaded = codi_models::io::weight_files(dir).and_then(|files| {
        codi_models::io::load_safetensors::<B, _>(SmallModel::<B>::init(&device()), &files)
    });
    if let Err(e) = loaded {
        names_file(e, blame);
    }
    if let Err(e) = codi_models::io::weights_digest(dir) {
        names_file(e, blame);
    }
}

/// `diffusion_pytorch_model.safetensors` (fp32, fp16 or bf16).
pub fn safetensors(data: &[u8]) {
    let dir = scratch("safetensors");
    let file = put(&dir, "diffusion_pytorch_model.safetensors", data);
    load_weights(&dir, &file);
}

/// `diffusion_pytorch_model.safetensors.index.json` over two shards of a [`SmallModel`] (written once).
pub fn safetensors_index(data: &[u8]) {
    let dir = scratch("safetensors_index");
    static SHARDS: OnceLock<()> = OnceLock::new();
    SHARDS.get_or_init(|| write_shards(&dir));
    let file = put(&dir, "diffusion_pytorch_model.safetensors.index.json", data);
    load_weights(&dir, &file);
}

/// `shard-1.safetensors` (proj, conv) and `shard-2.safetensors` (norm) of a [`SmallModel`] in `dir`.
pub fn write_shards(dir: &Path) {
    let whole = dir.join("whole");
    let model = SmallModel::<B>::init(&device());
    codi_models::io::save_diffusers_dir::<B, _>(&model, &serde_json::json!({}), &whole)
        .expect("the small model saves");
    let all = crate::read_safetensors(&whole.join("diffusion_pytorch_model.safetensors"));
    for (shard, prefixes) in [
        ("shard-1", &["proj.", "conv."][..]),
        ("shard-2", &["norm."]),
    ] {
        let part = all
            .iter()
            .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)));
        let bytes = crate::safetensors_bytes(part, safetensors::Dtype::F32);
        std::fs::write(dir.join(format!("{shard}.safetensors")), bytes).expect("a shard saves");
    }
    std::fs::remove_dir_all(whole).ok();
}

/// `tokenizer/tokenizer.json`, loaded with the embedded default's conventions and with CLIP's, then used on
/// prompts (case, punctuation, non-ASCII, longer than the context).
pub fn tokenizer(data: &[u8]) {
    let file = put(&scratch("tokenizer"), "tokenizer.json", data);
    let long = "a photo of a cat ".repeat(40);
    let prompts = [
        "a Photo of a CAT, sitting!",
        "東京の夜 — café ☕",
        "",
        long.as_str(),
    ];
    let loaders: [(usize, &str, &str); 2] = [
        (16, "<pad>", "<eos>"),
        (77, "<|endoftext|>", "<|endoftext|>"),
    ];
    for (max_length, pad, eos) in loaders {
        match codi_models::tokenizer::TextTokenizer::from_file(&file, max_length, pad, Some(eos)) {
            Ok(t) => {
                for p in prompts {
                    if let Err(e) = t.encode_batch::<B>(&[p], &device()) {
                        names_file(e, &file);
                    }
                }
            }
            Err(e) => names_file(e, &file),
        }
    }
}

/// A `tokenizer/` folder as transformers' `CLIPTokenizer` saves it: the input is `vocab.json`, a zero byte,
/// then `merges.txt`.
pub fn clip_tokenizer_files(data: &[u8]) {
    let dir = scratch("clip_tokenizer_files");
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    put(&dir, "vocab.json", &data[..split]);
    put(
        &dir,
        "merges.txt",
        data.get(split + 1..).unwrap_or_default(),
    );
    let prompts = ["a Photo of a CAT, sitting!", "東京の夜 — café ☕", ""];
    let check = |e: codi_models::ModelError| {
        let m = e.to_string();
        assert!(
            m.contains("vocab.json") || m.contains("merges.txt"),
            "the error names neither file: {m}"
        );
    };
    match codi_models::tokenizer::TextTokenizer::clip(&dir) {
        Ok(t) => {
            if let Err(e) = t.encode_batch::<B>(&prompts, &device()) {
                check(e);
            }
        }
        Err(e) => check(e),
    }
}

/// An IDX file (raw or gzipped) of a Fashion-MNIST-style dataset.
pub fn idx(data: &[u8]) {
    let file = put(&scratch("idx"), "train-images-idx3-ubyte", data);
    if let Err(e) = codi_train::data::idx::read_idx(&file) {
        names_file(e, &file);
    }
}

/// An image given to `codi sample --input` or read from an image folder, named `name`: decoded (by its
/// content) and cut to a training square.
fn any_image(target: &str, name: &str, data: &[u8]) {
    let file = put(&scratch(target), name, data);
    match codi_pipelines::image_file::read_rgb(&file) {
        Ok(image) => {
            let (w, h) = image.dimensions();
            let window = codi_pipelines::image_file::Window::at(w, h, 0.3, 0.7);
            let _ = codi_pipelines::image_file::square(&image, window, 8, true);
        }
        Err(e) => names_file(e, &file),
    }
}

/// A PNG image.
pub fn png(data: &[u8]) {
    any_image("png", "input.png", data);
}

/// An image of any format the `image` crate reads (JPEG, WebP, GIF, BMP, TIFF, …), named `.jpg`.
pub fn image(data: &[u8]) {
    any_image("image", "input.jpg", data);
}

/// An image folder's `metadata.jsonl` beside two images: opened with the columns of every task, then every
/// row's images read as training does.
pub fn image_folder(data: &[u8]) {
    use codi_train::data::imagefolder::{FolderConfig, ImageFolder};
    use rand_chacha::rand_core::SeedableRng;
    let dir = scratch("image_folder");
    for (name, bytes) in image_folder_images() {
        if !dir.join(name).exists() {
            put(&dir, name, bytes);
        }
    }
    let file = put(&dir, "metadata.jsonl", data);
    let config = FolderConfig::new().with_resolution(8);
    let columns = [
        config.image_columns(),
        config.controlnet_columns(),
        config.edit_columns(),
    ];
    for c in columns {
        match ImageFolder::open(
            &dir,
            codi_train::data::fashion_mnist::Split::Train,
            &c,
            &config,
        ) {
            Ok(folder) => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                for i in 0..folder.len().min(16) {
                    let _ = folder.load(i, &mut rng);
                }
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("metadata.jsonl") || message.contains(".png"),
                    "the error names neither the metadata nor an image: {message}"
                );
            }
        }
    }
    std::fs::remove_file(file).ok();
}

/// The two images an `image_folder` input may name: `a.png` and `b.png`.
fn image_folder_images() -> [(&'static str, &'static [u8]); 2] {
    static IMAGES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let [a, b] = IMAGES.get_or_init(|| {
        [
            png_file(::png::ColorType::Rgb, ::png::BitDepth::Eight),
            png_file(::png::ColorType::Grayscale, ::png::BitDepth::Eight),
        ]
    });
    [("a.png", a), ("b.png", b)]
}

/// `codi_adapter.json`: read, its task resolved and its loss settings checked against a schedule.
pub fn adapter_info(data: &[u8]) {
    let dir = scratch("adapter_info");
    let file = put(&dir, "codi_adapter.json", data);
    match codi_pipelines::adapter::read_adapter_info(&dir) {
        Ok((_, info)) => {
            let _ = info.task_kind();
            let _ = codi_core::loss::timestep_pairs(&info.loss, 1000, 2, &[0.25, 0.75]);
        }
        Err(e) => names_file(e, &file),
    }
}

/// A JSON config of `codi distill --config` or `codi pretrain --config`: parsed (unknown keys refused) and
/// checked against its bounds, as the commands do before training.
fn train_config<C: burn::config::Config + codi_train::training::checks::Checked>(
    target: &str,
    data: &[u8],
) {
    let file = put(&scratch(target), "config.json", data);
    if let Err(e) = codi_train::training::load_config::<C>(&file) {
        names_file(e, &file);
    }
}

/// `configs/distill/*.json`.
pub fn config_distill(data: &[u8]) {
    train_config::<codi_train::distill::DistillConfig>("config_distill", data);
}

/// `configs/pretrain/teacher.json`.
pub fn config_pretrain_teacher(data: &[u8]) {
    train_config::<codi_train::pretrain::teacher::TeacherPretrainConfig>(
        "config_pretrain_teacher",
        data,
    );
}

/// `configs/pretrain/vae.json`.
pub fn config_pretrain_vae(data: &[u8]) {
    train_config::<codi_train::pretrain::vae::VaePretrainConfig>("config_pretrain_vae", data);
}

/// `configs/pretrain/classifier.json`.
pub fn config_pretrain_classifier(data: &[u8]) {
    train_config::<codi_train::pretrain::classifier::ClassifierPretrainConfig>(
        "config_pretrain_classifier",
        data,
    );
}

/// A repository file's bytes.
fn repo_file(rel: &str) -> Vec<u8> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every file of a repository folder, by name.
fn repo_files(rel: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A [`SmallModel`]'s weights as one safetensors file of `dtype` (F32, F16 or BF16).
fn small_model_file(dtype: safetensors::Dtype) -> Vec<u8> {
    let dir = scratch("seeds");
    let model = SmallModel::<B>::init(&device());
    codi_models::io::save_diffusers_dir::<B, _>(&model, &serde_json::json!({}), &dir)
        .expect("saves");
    let all = crate::read_safetensors(&dir.join("diffusion_pytorch_model.safetensors"));
    crate::safetensors_bytes(&all, dtype)
}

/// An IDX file of `images` 2×3 images.
fn idx_file(images: u32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [images, 2, 3] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend((0..images * 6).map(|i| (i * 37 % 256) as u8));
    bytes
}

/// A 3×2 PNG of `color` with `depth` bits per sample.
fn png_file(color: ::png::ColorType, depth: ::png::BitDepth) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut out, 3, 2);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == ::png::ColorType::Indexed {
            enc.set_palette(
                (0..=255u8)
                    .flat_map(|i| [i, 255 - i, i / 2])
                    .collect::<Vec<u8>>(),
            );
        }
        let mut writer = enc.write_header().expect("header");
        let bits = color.samples() * depth as usize * 3;
        let row = bits.div_ceil(8);
        let data: Vec<u8> = (0..row * 2).map(|i| (i * 53 % 256) as u8).collect();
        writer.write_image_data(&data).expect("data");
    }
    out
}

/// The seed inputs of `target`: the repository's own files of that kind and files made by codi's writers.
/// → (name, bytes)
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let one = |name: &str, rel: &str| vec![(name.to_string(), repo_file(rel))];
    let fixture = |m: &str| format!("tests/fixtures/diffusers-small/models/{m}/config.json");
    match target {
        "config_unet" => [
            one("tiny.json", "assets/tiny/unet/config.json"),
            one("fixture.json", &fixture("unet2d_condition")),
        ]
        .concat(),
        "config_unet2d" => one("fixture.json", &fixture("unet2d")),
        "config_controlnet" => [
            one(
                "tiny.json",
                "assets/tiny/adapters/sr/controlnet/config.json",
            ),
            one("fixture.json", &fixture("controlnet")),
        ]
        .concat(),
        "config_vae" => [
            one("tiny.json", "assets/tiny/vae/config.json"),
            one("fixture.json", &fixture("vae")),
        ]
        .concat(),
        "config_clip" => [
            one("tiny.json", "assets/tiny/text_encoder/config.json"),
            one("fixture.json", "tests/fixtures/clip-tiny/config.json"),
        ]
        .concat(),
        "config_classifier" => one("tiny.json", "assets/tiny/classifier/config.json"),
        "config_scheduler" => {
            let pndm = br#"{"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,"num_train_timesteps":1000,"prediction_type":"v_prediction","set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,"trained_betas":null}"#;
            [
                one("tiny.json", "assets/tiny/scheduler/scheduler_config.json"),
                vec![("pndm.json".into(), pndm.to_vec())],
            ]
            .concat()
        }
        "safetensors" => vec![
            (
                "f32.safetensors".into(),
                small_model_file(safetensors::Dtype::F32),
            ),
            (
                "f16.safetensors".into(),
                small_model_file(safetensors::Dtype::F16),
            ),
            (
                "bf16.safetensors".into(),
                small_model_file(safetensors::Dtype::BF16),
            ),
        ],
        "safetensors_index" => {
            let index = serde_json::json!({
                "metadata": {"total_size": 0},
                "weight_map": {
                    "proj.weight": "shard-1.safetensors", "proj.bias": "shard-1.safetensors",
                    "conv.weight": "shard-1.safetensors", "conv.bias": "shard-1.safetensors",
                    "norm.weight": "shard-2.safetensors", "norm.bias": "shard-2.safetensors"
                }
            });
            vec![(
                "index.json".into(),
                serde_json::to_vec_pretty(&index).unwrap(),
            )]
        }
        "tokenizer" => [
            one("tiny.json", "assets/tiny/tokenizer/tokenizer.json"),
            one("clip.json", "tests/fixtures/clip-tokenizer/tokenizer.json"),
        ]
        .concat(),
        "clip_tokenizer_files" => {
            let mut files = repo_file("tests/fixtures/clip-tokenizer/vocab.json");
            files.push(0);
            files.extend(repo_file("tests/fixtures/clip-tokenizer/merges.txt"));
            vec![("fixture".into(), files)]
        }
        "idx" => {
            let raw = idx_file(2);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &raw).unwrap();
            vec![("raw".into(), raw), ("gz".into(), gz.finish().unwrap())]
        }
        "png" => {
            use ::png::{BitDepth::*, ColorType::*};
            [
                (Rgb, Eight),
                (Rgba, Eight),
                (Grayscale, Eight),
                (GrayscaleAlpha, Sixteen),
                (Rgb, Sixteen),
                (Grayscale, One),
                (Indexed, Eight),
            ]
            .into_iter()
            .map(|(c, d)| (format!("{c:?}-{d:?}.png"), png_file(c, d)))
            .collect()
        }
        "image" => ["000.jpg", "002.webp", "001.png"]
            .iter()
            .map(|f| one(f, &format!("tests/fixtures/image-folder/images/{f}")))
            .collect::<Vec<_>>()
            .concat(),
        "image_folder" => vec![
            (
                "columns.jsonl".into(),
                br#"{"file_name": "a.png", "text": "a shape", "conditioning_image": "b.png", "input_image": "a.png", "edit_prompt": "make it darker", "edited_image": "b.png"}
{"file_name": "b.png", "text": ["one", "two"], "conditioning_image_file_name": "a.png", "input_image": "b.png", "edit_prompt": "flip it", "edited_image": "a.png"}"#
                    .to_vec(),
            ),
            (
                "plain.jsonl".into(),
                b"{\"file_name\": \"a.png\"}\n\n{\"image\": \"b.png\", \"text\": null}\n".to_vec(),
            ),
        ],
        "adapter_info" => [
            one("sr.json", "assets/tiny/adapters/sr/codi_adapter.json"),
            one("codi-sr.json", "assets/tiny/codi-sr/codi_adapter.json"),
        ]
        .concat(),
        "config_distill" => repo_files("configs/distill", "json"),
        "config_pretrain_teacher" => one("teacher.json", "configs/pretrain/teacher.json"),
        "config_pretrain_vae" => one("vae.json", "configs/pretrain/vae.json"),
        "config_pretrain_classifier" => one("classifier.json", "configs/pretrain/classifier.json"),
        other => panic!("no seeds for the target {other}"),
    }
}
