//! Reading diffusers' `config.json`: values that may be one number or one per block, and options codi does
//! not implement, which are errors rather than silently ignored.

use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

use crate::error::ModelError;

/// `8` or `[5, 10, 20, 20]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    One(T),
    /// One value per block.
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// One value per block; a list must have exactly `n` entries.
    pub fn expand(&self, n: usize, key: &str, file: &Path) -> Result<Vec<T>, ModelError> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); n]),
            Self::Many(v) if v.len() == n => Ok(v.clone()),
            Self::Many(v) => Err(ModelError::Config {
                file: file.to_path_buf(),
                reason: format!(
                    "`{key}` has {} entries but the model has {n} blocks",
                    v.len()
                ),
            }),
        }
    }
}

/// Reads a config file as JSON.
pub fn read_json(file: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(file).map_err(|e| ModelError::Io {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        file: file.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// Deserialises `value` into `T`, naming the file on error.
pub fn parse<T: for<'de> Deserialize<'de>>(value: &Value, file: &Path) -> Result<T, ModelError> {
    T::deserialize(value).map_err(|e| ModelError::Config {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Fails when `key` is present with a value other than null / false / one of `allowed`.
pub fn require_default(
    value: &Value,
    file: &Path,
    key: &str,
    allowed: &[Value],
) -> Result<(), ModelError> {
    match value.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        // 0 and 0.0 are the same setting: JSON writers differ in how they print a whole float.
        Some(v)
            if allowed
                .iter()
                .any(|a| a == v || (a.is_number() && a.as_f64() == v.as_f64())) =>
        {
            Ok(())
        }
        Some(v) => Err(ModelError::Unsupported {
            file: file.to_path_buf(),
            what: format!("`{key}` = {v}"),
        }),
    }
}

/// The `_class_name` a diffusers config names, if any.
pub fn class_name(value: &Value) -> Option<&str> {
    value.get("_class_name").and_then(Value::as_str)
}

/// serde defaults shared by the config readers (diffusers' own default values).
pub mod defaults {
    /// Returns 1.
    pub fn one() -> usize {
        1
    }
    /// Returns 2.
    pub fn two() -> usize {
        2
    }
    /// Returns 3 (e.g. RGB channels, 3×3 kernels).
    pub fn three() -> usize {
        3
    }
    /// Returns 4 (e.g. latent channels).
    pub fn four() -> usize {
        4
    }
    /// Returns 8 (e.g. `attention_head_dim`).
    pub fn eight() -> usize {
        8
    }
    /// Returns `true`.
    pub fn yes() -> bool {
        true
    }
    /// Returns 1.0 (e.g. scale factors).
    pub fn onef() -> f64 {
        1.0
    }
    /// Returns 32, diffusers' default `norm_num_groups`.
    pub fn groups() -> usize {
        32
    }
    /// Returns 1e-5, diffusers' default `norm_eps`.
    pub fn eps() -> f64 {
        1e-5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn require_default_takes_a_whole_number_for_its_float_and_names_what_it_refuses() {
        let file = Path::new("vae/config.json");
        let allowed = [json!(0.0)];
        for ok in [
            json!({}),
            json!({"shift_factor": null}),
            json!({"shift_factor": 0}),
            json!({"shift_factor": 0.0}),
        ] {
            require_default(&ok, file, "shift_factor", &allowed).unwrap();
        }
        let err = require_default(
            &json!({"shift_factor": 0.1159}),
            file,
            "shift_factor",
            &allowed,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("vae/config.json") && err.contains("shift_factor"),
            "{err}"
        );
    }
}
