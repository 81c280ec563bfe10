//! Helpers for the workspace-level tests: where the fixtures are and how to read them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

pub mod alloc_cap;
pub mod fuzz;

/// `tests/fixtures/<rel>` in this repository.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Every tensor of a safetensors file as (shape, f32 values); f64 and f16 are converted.
pub fn read_safetensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!(
                    "{}: tensor {name} has unsupported dtype {other:?}",
                    path.display()
                ),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// A safetensors file's bytes holding `tensors` (name → shape, f32 values) stored as `dtype`: F32, F16 or
/// BF16 (what checkpoints ship).
pub fn safetensors_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a (Vec<usize>, Vec<f32>))>,
    dtype: Dtype,
) -> Vec<u8> {
    let encoded: Vec<(&String, &Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, values))| {
            let bytes = values
                .iter()
                .flat_map(|&v| match dtype {
                    Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                    Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                    Dtype::F32 => v.to_le_bytes().to_vec(),
                    other => panic!("no test writes {other:?} tensors"),
                })
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(&String, safetensors::tensor::TensorView<'_>)> = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes)
                .expect("shape and bytes agree");
            (*name, view)
        })
        .collect();
    safetensors::serialize(views, None).expect("the tensors serialise")
}

/// A named fixture tensor on the device.
pub fn tensor<B: Backend, const D: usize>(
    all: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    name: &str,
    device: &B::Device,
) -> Tensor<B, D> {
    let (shape, values) = all
        .get(name)
        .unwrap_or_else(|| panic!("fixture has no tensor '{name}'"));
    Tensor::from_data(TensorData::new(values.clone(), shape.clone()), device)
}

/// The tiny text-to-image teacher of the end-to-end tests: a two-level UNet (cross-attention on the first
/// level) and a one-layer CLIP text encoder over the embedded default's word vocabulary.
pub fn tiny_teacher_configs() -> (
    codi_models::UNet2DConditionModelConfig,
    codi_models::CLIPTextConfig,
) {
    use codi_models::unet::{DownBlockType, UpBlockType};
    let unet = codi_models::UNet2DConditionModelConfig::new(
        vec![
            DownBlockType::CrossAttnDownBlock2D,
            DownBlockType::DownBlock2D,
        ],
        vec![UpBlockType::UpBlock2D, UpBlockType::CrossAttnUpBlock2D],
        vec![16, 32],
        vec![1, 1],
        16,
        vec![1, 1],
        vec![2, 2],
    )
    .with_norm_num_groups(8);
    let text = codi_models::CLIPTextConfig::new()
        .with_vocab_size(codi_train::text::vocabulary().len())
        .with_hidden_size(16)
        .with_intermediate_size(32)
        .with_num_hidden_layers(1)
        .with_num_attention_heads(2)
        .with_max_position_embeddings(codi_train::text::MAX_LENGTH)
        .with_hidden_act(codi_models::clip::HiddenAct::Gelu)
        .with_eos_token_id(3);
    (unet, text)
}

/// The data of the end-to-end runs: the Fashion-MNIST subset fixture and a few scenes.
pub fn tiny_data() -> codi_train::data::mixed::DataConfig {
    codi_train::data::mixed::DataConfig::new()
        .with_scenes_train(24)
        .with_scenes_test(8)
}

/// A few steps of batch 4 per epoch.
pub fn quick_loop(epochs: usize) -> codi_train::training::TrainLoopConfig {
    codi_train::training::TrainLoopConfig::new()
        .with_batch_size(4)
        .with_num_epochs(epochs)
        .with_steps_per_epoch(4)
        .with_valid_items(8)
        .with_learning_rate(2e-3)
}

/// A tiny pipeline in `root/pipe`: VAE f = 4 and [`tiny_teacher_configs`]' teacher, one short epoch each
/// (run folders `root/vae-run`, `root/t-run`). → the pipeline folder
pub fn tiny_pipeline(root: &Path) -> PathBuf {
    use codi_train::pretrain::teacher::{pretrain_teacher, TeacherPretrainConfig};
    use codi_train::pretrain::vae::{pretrain_vae, VaePretrainConfig};
    use codi_train::training::RunOptions;
    type B = burn::backend::Autodiff<codi_core::backend::CpuBackend>;
    let fashion = fixture("fashion-mnist-subset");
    let dev = Default::default();
    let pipe = root.join("pipe");
    let vae = VaePretrainConfig::new(
        codi_models::AutoencoderKLConfig::new(vec![8, 16, 16]).with_norm_num_groups(4),
        quick_loop(1),
        tiny_data(),
    );
    let vae_run = RunOptions::new(root.join("vae-run"));
    pretrain_vae::<B>(&vae, &fashion, &vae_run, &pipe.join("vae"), &dev).unwrap();
    let (unet, text) = tiny_teacher_configs();
    let teacher = TeacherPretrainConfig::new(unet, text, quick_loop(1), tiny_data());
    let teacher_run = RunOptions::new(root.join("t-run"));
    pretrain_teacher::<B>(
        &teacher,
        &fashion,
        &pipe.join("vae"),
        &teacher_run,
        &pipe,
        &dev,
    )
    .unwrap();
    pipe
}

struct Values(Vec<f32>);

impl<B: Backend> burn::module::ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
        self.0.extend(codi_core::tensor_ops::to_vec(p.val()));
    }
}

/// Every float parameter of `m`, in module order.
pub fn param_values<B: Backend, M: burn::module::Module<B>>(m: &M) -> Vec<f32> {
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

/// A fresh scratch folder under the system temp dir, removed when dropped (also when the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/codi-<name>-<pid>`, emptied first.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("codi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
