//! What a model config may describe. A config is checked before a model is built from it, so that a value
//! codi cannot build (zero heads, groups that do not divide the channels) or a size no real model has
//! (channel counts in the millions, thousands of layers) is an error naming the key, not a panic, an
//! allocation of terabytes or an hour spent building modules.
//!
//! The bounds are far above every published latent diffusion model (SD-XL: 1,280 channels, 10 transformer
//! layers per block, 3 levels).

use std::path::Path;

use crate::error::ModelError;

/// Most channels of any layer, and most tokens, classes and embedding rows.
pub const MAX_CHANNELS: usize = 1 << 16;
/// Most resolution levels (blocks) of a UNet, VAE or classifier.
pub const MAX_LEVELS: usize = 8;
/// Most resnets or transformer blocks per level, and most encoder layers of a text encoder.
pub const MAX_LAYERS: usize = 64;
/// Most rows of a token embedding (CLIP has 49,408).
pub const MAX_VOCABULARY: usize = 1 << 20;

/// `config` if `check` finds nothing wrong with it, else the problems as an error naming `file`.
pub fn checked<C>(
    config: C,
    file: &Path,
    check: impl FnOnce(&C) -> Result<(), String>,
) -> Result<C, ModelError> {
    check(&config).map_err(|reason| ModelError::Config {
        file: file.to_path_buf(),
        reason,
    })?;
    Ok(config)
}

/// Collects what is wrong with a config, key by key.
#[derive(Debug, Default)]
pub struct Check {
    problems: Vec<String>,
}

impl Check {
    /// No problem yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem unless `ok`.
    pub fn require(&mut self, ok: bool, problem: impl FnOnce() -> String) -> &mut Self {
        if !ok {
            self.problems.push(problem());
        }
        self
    }

    /// `key` must be in `min..=max`.
    pub fn count(&mut self, key: &str, value: usize, min: usize, max: usize) -> &mut Self {
        self.require((min..=max).contains(&value), || {
            format!("`{key}` = {value}: must be in {min}..={max}")
        })
    }

    /// Every entry of `key` must be in `min..=max`.
    pub fn counts(&mut self, key: &str, values: &[usize], min: usize, max: usize) -> &mut Self {
        self.require(values.iter().all(|v| (min..=max).contains(v)), || {
            format!("`{key}` = {values:?}: every entry must be in {min}..={max}")
        })
    }

    /// The list `key` must have `min..=max` entries.
    pub fn entries(&mut self, key: &str, found: usize, min: usize, max: usize) -> &mut Self {
        self.require((min..=max).contains(&found), || {
            format!("`{key}` has {found} entries: must have {min}..={max}")
        })
    }

    /// `key` must have `len` entries (one per block).
    pub fn len(&mut self, key: &str, found: usize, len: usize) -> &mut Self {
        self.require(found == len, || {
            format!("`{key}` has {found} entries but the model has {len} blocks")
        })
    }

    /// `key` must be finite and in `min..=max`.
    pub fn real(&mut self, key: &str, value: f64, min: f64, max: f64) -> &mut Self {
        self.require(value.is_finite() && value >= min && value <= max, || {
            format!("`{key}` = {value}: must be a number in [{min}, {max}]")
        })
    }

    /// `key` must be finite and above 0.
    pub fn positive(&mut self, key: &str, value: f64) -> &mut Self {
        self.require(value.is_finite() && value > 0.0, || {
            format!("`{key}` = {value}: must be a finite number above 0")
        })
    }

    /// A channel count `key`: in 1..=[`MAX_CHANNELS`].
    pub fn channels(&mut self, key: &str, value: usize) -> &mut Self {
        self.count(key, value, 1, MAX_CHANNELS)
    }

    /// The resolution levels of a UNet, VAE or classifier: 1..=[`MAX_LEVELS`] entries of
    /// `block_out_channels`, each a channel count that `norm_num_groups` divides.
    pub fn levels(&mut self, block_out_channels: &[usize], norm_num_groups: usize) -> &mut Self {
        let key = "block_out_channels";
        self.entries(key, block_out_channels.len(), 1, MAX_LEVELS)
            .counts(key, block_out_channels, 1, MAX_CHANNELS)
            .groups("norm_num_groups", norm_num_groups, block_out_channels)
    }

    /// `groups` GroupNorm groups (`key`) must divide every channel count in `channels`.
    pub fn groups(&mut self, key: &str, groups: usize, channels: &[usize]) -> &mut Self {
        self.require(
            groups > 0 && channels.iter().all(|c| c.is_multiple_of(groups)),
            || format!("`{key}` = {groups} must divide every channel count {channels:?}"),
        )
    }

    /// Every problem found, or none. → Ok, or the problems joined
    pub fn finish(&self) -> Result<(), String> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems.join("; "))
        }
    }
}
