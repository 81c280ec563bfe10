//! transformers' `CLIPTextModel`: the text encoder of Stable Diffusion 1.x (pre-LayerNorm transformer with a
//! causal mask), configured from its `config.json`. Key names mirror transformers' (`text_model.…`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Int, Tensor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

use crate::diffusers_json::parse;
use crate::error::ModelError;
use crate::layers::{LayerNorm, LayerNormConfig, Linear, LinearConfig};

/// The activation of the CLIP MLPs (transformers' `hidden_act`).
#[derive(Config, Debug, PartialEq, Copy)]
pub enum HiddenAct {
    /// x·σ(1.702x) (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// GELU (transformers' `gelu`).
    Gelu,
}

/// The settings of transformers' `CLIPTextModel`, named as in its `config.json` (defaults are transformers').
#[derive(Config, Debug, PartialEq)]
pub struct CLIPTextConfig {
    /// Number of token ids: rows of the token embedding (transformers' `vocab_size`).
    #[config(default = 49408)]
    pub vocab_size: usize,
    /// Width of the token states (transformers' `hidden_size`).
    #[config(default = 512)]
    pub hidden_size: usize,
    /// Hidden width of each layer's MLP (transformers' `intermediate_size`).
    #[config(default = 2048)]
    pub intermediate_size: usize,
    /// Number of encoder layers (transformers' `num_hidden_layers`).
    #[config(default = 12)]
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size` (transformers' `num_attention_heads`).
    #[config(default = 8)]
    pub num_attention_heads: usize,
    /// Longest token sequence: rows of the position embedding, 77 for CLIP (transformers'
    /// `max_position_embeddings`).
    #[config(default = 77)]
    pub max_position_embeddings: usize,
    /// The MLPs' activation (transformers' `hidden_act`).
    #[config(default = "HiddenAct::QuickGelu")]
    pub hidden_act: HiddenAct,
    /// ε of every LayerNorm (transformers' `layer_norm_eps`).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// End-of-text token id (its first position is the pooled output); 2 in old configs, where transformers
    /// takes the position of the largest id instead.
    #[config(default = 49407)]
    pub eos_token_id: usize,
}

#[derive(Deserialize)]
struct Json {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "act")]
    hidden_act: String,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "eos")]
    eos_token_id: usize,
}
fn act() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}
fn eos() -> usize {
    49407
}

impl CLIPTextConfig {
    /// Reads transformers' `config.json` (already parsed); `file` names it in errors. Errors on an activation
    /// other than `quick_gelu` / `gelu` and on a head count that does not divide `hidden_size`.
    pub fn from_json(value: &Value, file: &Path) -> Result<Self, ModelError> {
        let j: Json = parse(value, file)?;
        let hidden_act = match j.hidden_act.as_str() {
            "quick_gelu" => HiddenAct::QuickGelu,
            "gelu" => HiddenAct::Gelu,
            other => {
                return Err(ModelError::Unsupported {
                    file: file.to_path_buf(),
                    what: format!("hidden_act '{other}'"),
                })
            }
        };
        let config = Self {
            vocab_size: j.vocab_size,
            hidden_size: j.hidden_size,
            intermediate_size: j.intermediate_size,
            num_hidden_layers: j.num_hidden_layers,
            num_attention_heads: j.num_attention_heads,
            max_position_embeddings: j.max_position_embeddings,
            hidden_act,
            layer_norm_eps: j.layer_norm_eps,
            eos_token_id: j.eos_token_id,
        };
        crate::limits::checked(config, file, Self::check)
    }

    /// Whether codi can build this text encoder, within [`crate::limits`]. → Ok, or every problem by key
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::*;
        let (hidden, heads) = (self.hidden_size, self.num_attention_heads);
        Check::new()
            .count("vocab_size", self.vocab_size, 1, MAX_VOCABULARY)
            .channels("hidden_size", hidden)
            .channels("intermediate_size", self.intermediate_size)
            .count("num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)
            .count(
                "max_position_embeddings",
                self.max_position_embeddings,
                1,
                MAX_CHANNELS,
            )
            .require(heads > 0 && hidden.is_multiple_of(heads), || {
                format!("hidden_size {hidden} is not divisible by {heads} heads")
            })
            .positive("layer_norm_eps", self.layer_norm_eps)
            .finish()
    }

    /// transformers' `config.json` for this model.
    pub fn to_json(&self) -> Value {
        json!({
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": match self.hidden_act {
                HiddenAct::QuickGelu => "quick_gelu",
                HiddenAct::Gelu => "gelu",
            },
            "layer_norm_eps": self.layer_norm_eps,
            "eos_token_id": self.eos_token_id,
        })
    }

    /// CLIP ViT-L/14's text tower (Stable Diffusion 1.5's text encoder).
    pub fn sd15() -> Self {
        Self::new()
            .with_hidden_size(768)
            .with_intermediate_size(3072)
            .with_num_attention_heads(12)
            .with_eos_token_id(2)
    }

    /// A randomly initialised text encoder with these settings.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CLIPTextModel<B> {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        CLIPTextModel {
            text_model: CLIPTextTransformer {
                embeddings: CLIPTextEmbeddings {
                    token_embedding: EmbeddingConfig::new(self.vocab_size, d).init(device),
                    position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d)
                        .init(device),
                },
                encoder: CLIPEncoder {
                    layers: (0..self.num_hidden_layers)
                        .map(|_| CLIPEncoderLayer {
                            self_attn: CLIPAttention {
                                q_proj: lin(d, d),
                                k_proj: lin(d, d),
                                v_proj: lin(d, d),
                                out_proj: lin(d, d),
                                heads: self.num_attention_heads,
                            },
                            layer_norm1: ln(),
                            mlp: CLIPMLP {
                                fc1: lin(d, self.intermediate_size),
                                fc2: lin(self.intermediate_size, d),
                                quick_gelu: self.hidden_act == HiddenAct::QuickGelu,
                            },
                            layer_norm2: ln(),
                        })
                        .collect(),
                },
                final_layer_norm: ln(),
                eos_token_id: self.eos_token_id,
            },
        }
    }
}

/// Token and position embeddings, summed.
#[derive(Module, Debug)]
pub struct CLIPTextEmbeddings<B: Backend> {
    /// Token id → state. weight: [vocab_size, hidden_size]
    pub token_embedding: Embedding<B>,
    /// Position → state, added to the token's. weight: [max_position_embeddings, hidden_size]
    pub position_embedding: Embedding<B>,
}

/// Multi-head causal self-attention of a CLIP encoder layer.
#[derive(Module, Debug)]
pub struct CLIPAttention<B: Backend> {
    /// Query projection, hidden → hidden.
    pub q_proj: Linear<B>,
    /// Key projection, hidden → hidden.
    pub k_proj: Linear<B>,
    /// Value projection, hidden → hidden.
    pub v_proj: Linear<B>,
    /// Output projection of the concatenated heads, hidden → hidden.
    pub out_proj: Linear<B>,
    /// Number of attention heads the hidden width is split into.
    pub heads: usize,
}

impl<B: Backend> CLIPAttention<B> {
    /// x: [batch, n, d] → [batch, n, d], causal.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let split = |t: Tensor<B, 3>| {
            t.reshape([b, n, self.heads, d / self.heads])
                .swap_dims(1, 2)
        };
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        let o = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([b, n, d]);
        self.out_proj.forward(o)
    }
}

/// The feed-forward part of a CLIP encoder layer: fc1 → activation → fc2.
#[derive(Module, Debug)]
pub struct CLIPMLP<B: Backend> {
    /// Expansion from `hidden_size` to `intermediate_size`.
    pub fc1: Linear<B>,
    /// Projection from `intermediate_size` back to `hidden_size`.
    pub fc2: Linear<B>,
    /// The activation: x·σ(1.702x) when true, GELU otherwise.
    pub quick_gelu: bool,
}

impl<B: Backend> CLIPMLP<B> {
    /// x: [batch, n, hidden] → [batch, n, hidden]
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc1.forward(x);
        let h = if self.quick_gelu {
            h.clone() * sigmoid(h.mul_scalar(1.702))
        } else {
            gelu(h)
        };
        self.fc2.forward(h)
    }
}

/// One pre-LayerNorm transformer layer: h + self_attn(layer_norm1(h)), then h + mlp(layer_norm2(h)).
#[derive(Module, Debug)]
pub struct CLIPEncoderLayer<B: Backend> {
    /// Causal self-attention over the tokens.
    pub self_attn: CLIPAttention<B>,
    /// LayerNorm before the self-attention.
    pub layer_norm1: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: CLIPMLP<B>,
    /// LayerNorm before the MLP.
    pub layer_norm2: LayerNorm<B>,
}

/// The stack of encoder layers.
#[derive(Module, Debug)]
pub struct CLIPEncoder<B: Backend> {
    /// The layers, applied in order (`num_hidden_layers` of them).
    pub layers: Vec<CLIPEncoderLayer<B>>,
}

/// transformers' `text_model`: embeddings, encoder layers and a final LayerNorm.
#[derive(Module, Debug)]
pub struct CLIPTextTransformer<B: Backend> {
    /// Token and position embeddings.
    pub embeddings: CLIPTextEmbeddings<B>,
    /// The transformer layers.
    pub encoder: CLIPEncoder<B>,
    /// LayerNorm over the last layer's output, which gives `last_hidden_state`.
    pub final_layer_norm: LayerNorm<B>,
    /// End-of-text id whose first position gives the pooled output; 2 (old configs) takes the position of the
    /// largest id instead, as transformers does.
    pub eos_token_id: usize,
}

/// transformers' `CLIPTextModel`, the text encoder of Stable Diffusion 1.x.
#[derive(Module, Debug)]
pub struct CLIPTextModel<B: Backend> {
    /// The transformer (keys `text_model.…`).
    pub text_model: CLIPTextTransformer<B>,
}

/// The encoder's outputs.
pub struct TextEncoding<B: Backend> {
    /// [batch, tokens, hidden] — what the UNet cross-attends to.
    pub last_hidden_state: Tensor<B, 3>,
    /// The end-of-text token's state. [batch, hidden]
    pub pooled: Tensor<B, 2>,
}

impl<B: Backend> CLIPTextModel<B> {
    /// input_ids: [batch, tokens] (tokens ≤ max_position_embeddings).
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> TextEncoding<B> {
        let m = &self.text_model;
        let [b, n] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device)
            .unsqueeze_dim::<2>(0)
            .repeat_dim(0, b);
        let mut h = m.embeddings.token_embedding.forward(input_ids.clone())
            + m.embeddings.position_embedding.forward(positions);
        for layer in &m.encoder.layers {
            h = h.clone() + layer.self_attn.forward(layer.layer_norm1.forward(h));
            h = h.clone() + layer.mlp.forward(layer.layer_norm2.forward(h));
        }
        let h = m.final_layer_norm.forward(h);
        // transformers: with eos_token_id == 2 (old configs) the position of the largest id; else the first eos.
        let eos_pos = if m.eos_token_id == 2 {
            input_ids.argmax(1)
        } else {
            input_ids.equal_elem(m.eos_token_id as i64).int().argmax(1)
        }; // [b, 1]
        let d = h.dims()[2];
        let idx = eos_pos.reshape([b, 1, 1]).repeat_dim(2, d);
        let pooled = h.clone().gather(1, idx).reshape([b, d]);
        TextEncoding {
            last_hidden_state: h,
            pooled,
        }
    }

    /// Builds the model from a transformers folder (`config.json` + `model.safetensors`).
    pub fn from_pretrained_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        crate::io::load_dir(
            dir,
            CLIPTextConfig::from_json,
            |c| c.init(device),
            &load_options(),
        )
    }
}

/// How transformers' CLIP files map onto this module: transformers ≥ 5 saves CLIPTextModel without the
/// `text_model.` prefix that older files (and SD 1.x) have, and older files carry a `position_ids` buffer.
pub fn load_options() -> crate::io::LoadOptions {
    crate::io::LoadOptions {
        remap: vec![(
            r"^(embeddings|encoder|final_layer_norm)\.".into(),
            "text_model.$1.".into(),
        )],
        ignore_unused_suffixes: vec!["position_ids".into()],
    }
}
