//! diffusers weight files through burn-store: safetensors (fp32 or fp16, single or sharded) in, safetensors
//! out, in diffusers' key layout. Missing or unused keys and shape mismatches are errors that list them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::Module;
use burn::tensor::{backend::Backend, DType};
use burn_store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore, TensorSnapshot,
};

use crate::error::ModelError;

/// diffusers key ↔ codi field, for the one place where diffusers' tree has a gap (`ff.net.1` is dropout).
const RULES: &[(&str, &str)] = &[("ff.net.0.proj.", "ff.proj."), ("ff.net.2.", "ff.out.")];

fn remapper(load: bool, extra: &[(String, String)]) -> KeyRemapper {
    let pairs = RULES
        .iter()
        .map(|(d, c)| {
            let (from, to) = if load { (d, c) } else { (c, d) };
            (format!(r"\.{}", regex_escape(from)), format!(".{to}"))
        })
        .chain(extra.iter().cloned());
    KeyRemapper::from_pattern_iter(pairs).expect("the remapping rules are valid regexes")
}

/// Model-specific loading rules.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Extra (regex, replacement) rules applied to the file's keys.
    pub remap: Vec<(String, String)>,
    /// Keys ending like this may be in the file without being used (buffers such as `position_ids`).
    pub ignore_unused_suffixes: Vec<String>,
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

/// Converts any float dtype to f32 after PyTorch → Burn adaptation (fp16/bf16 checkpoints).
#[derive(Clone, Default)]
struct ToF32(PyTorchToBurnAdapter);

impl ModuleAdapter for ToF32 {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let s = self.0.adapt(snapshot);
        if s.dtype == DType::F32 {
            return s;
        }
        let data = s.clone_data_fn();
        let mut out = TensorSnapshot::from_closure(
            Rc::new(move || data().map(|d| d.convert::<f32>())),
            DType::F32,
            s.shape.clone(),
            s.path_stack.clone().unwrap_or_default(),
            s.container_stack.clone().unwrap_or_default(),
            s.tensor_id.unwrap_or_default(),
        );
        out.tensor_id = s.tensor_id;
        out
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        self.0
            .get_alternative_param_name(param_name, container_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// A Burn path as diffusers would name it (enum variants dropped, codi's renamed fields mapped back).
fn diffusers_name(path: &str) -> String {
    let kept: Vec<&str> = path
        .split('.')
        .filter(|s| !s.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .collect();
    let mut name = format!(".{}", kept.join("."));
    for (d, c) in RULES {
        name = name.replace(&format!(".{c}"), &format!(".{d}"));
    }
    name[1..]
        .replace(".gamma", ".weight")
        .replace(".beta", ".bias")
}

/// A shard's file name from an index's `weight_map`: a plain name in the model's folder. A path (`../x`,
/// `/etc/x`, `sub/x`) is refused, so that a downloaded index cannot make codi read outside the folder.
fn shard_name<'a>(value: &'a serde_json::Value, key: &str) -> Result<&'a str, String> {
    let name = value
        .as_str()
        .ok_or_else(|| format!("`weight_map` entry {key:?} is not a file name"))?;
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && Path::new(name).file_name().is_some_and(|f| f == name);
    if plain {
        Ok(name)
    } else {
        Err(format!(
            "`weight_map` entry {key:?} names {name:?}: shards must be files in the model's folder"
        ))
    }
}

/// The weight files of a diffusers model folder: a sharded index if present, else the single file
/// (`diffusion_pytorch_model.safetensors`, `model.safetensors`, or their fp16 variants).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    for stem in ["diffusion_pytorch_model", "model"] {
        for variant in ["", ".fp16"] {
            let index = dir.join(format!("{stem}{variant}.safetensors.index.json"));
            if index.exists() {
                let v = crate::diffusers_json::read_json(&index)?;
                let map = v
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| ModelError::Config {
                        file: index.clone(),
                        reason: "no `weight_map` object".into(),
                    })?;
                let mut files = BTreeSet::new();
                for (key, f) in map {
                    let name = shard_name(f, key).map_err(|reason| ModelError::Config {
                        file: index.clone(),
                        reason,
                    })?;
                    if files.insert(name) && !dir.join(name).is_file() {
                        return Err(ModelError::Config {
                            file: index.clone(),
                            reason: format!("names the shard {name:?}, which is not in the folder"),
                        });
                    }
                }
                return Ok(files.into_iter().map(|f| dir.join(f)).collect());
            }
            let single = dir.join(format!("{stem}{variant}.safetensors"));
            if single.exists() {
                return Ok(vec![single]);
            }
        }
    }
    Err(ModelError::Io {
        file: dir.to_path_buf(),
        reason: "no diffusion_pytorch_model.safetensors, model.safetensors or sharded index in this folder".into(),
    })
}

/// Loads weights from safetensors files in diffusers layout into `model`. Every parameter of the model must
/// be found in exactly the files given, and every tensor in the files must be used.
pub fn load_safetensors<B: Backend, M: Module<B>>(
    model: M,
    files: &[PathBuf],
) -> Result<M, ModelError> {
    load_safetensors_with(model, files, &LoadOptions::default())
}

/// [`load_safetensors`] with model-specific rules.
pub fn load_safetensors_with<B: Backend, M: Module<B>>(
    mut model: M,
    files: &[PathBuf],
    options: &LoadOptions,
) -> Result<M, ModelError> {
    let first = files.first().cloned().unwrap_or_default();
    let mut applied = BTreeSet::new();
    let mut missing: Option<BTreeSet<String>> = None;
    let mut unused = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        if !file.exists() {
            return Err(ModelError::Io {
                file: file.clone(),
                reason: "file not found".into(),
            });
        }
        let mut store = SafetensorsStore::from_file(file)
            .with_from_adapter(ToF32::default())
            .skip_enum_variants(true)
            .remap(remapper(true, &options.remap))
            .allow_partial(true)
            // Shape errors come back in the result, to be reported with the missing and unused keys.
            .validate(false);
        let result = model.load_from(&mut store).map_err(|e| ModelError::Io {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        applied.extend(result.applied.iter().map(|p| diffusers_name(p)));
        let here: BTreeSet<String> = result
            .missing
            .iter()
            .map(|(p, _)| diffusers_name(p))
            .collect();
        missing = Some(match missing {
            None => here,
            Some(m) => m.intersection(&here).cloned().collect(),
        });
        unused.extend(
            result
                .unused
                .iter()
                .map(|p| (diffusers_name(p), file.clone())),
        );
        errors.extend(result.errors.iter().map(|e| e.to_string()));
    }
    let missing: Vec<String> = missing
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !applied.contains(m))
        .collect();
    // burn-store reports a norm's `weight`/`bias` as unused even when it was applied under Burn's
    // `gamma`/`beta` name; only keys that were applied under no name are really unused.
    let unused: Vec<String> = unused
        .into_iter()
        .filter(|(k, _)| {
            !applied.contains(k)
                && !options
                    .ignore_unused_suffixes
                    .iter()
                    .any(|s| k.ends_with(s.as_str()))
        })
        .map(|(k, f)| format!("{k} (in {})", f.display()))
        .collect();
    if missing.is_empty() && unused.is_empty() && errors.is_empty() {
        return Ok(model);
    }
    let mut details = String::new();
    let mut section = |title: &str, items: &[String]| {
        if !items.is_empty() {
            details.push_str(&format!("  {title} ({}):\n", items.len()));
            for i in items {
                details.push_str(&format!("    {i}\n"));
            }
        }
    };
    section(
        "missing keys, which the model needs but the files lack",
        &missing,
    );
    section(
        "unused keys, which the files have but the model lacks",
        &unused,
    );
    section("shape mismatches", &errors);
    Err(ModelError::Weights {
        file: first,
        details,
    })
}

/// Saves `model` as one safetensors file in diffusers' layout, through a temporary file and a rename.
pub fn save_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    file: &Path,
) -> Result<(), ModelError> {
    let tmp = file.with_extension("safetensors.tmp");
    let io = |e: String| ModelError::Io {
        file: file.to_path_buf(),
        reason: e,
    };
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
    }
    let mut store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .remap(remapper(false, &[]))
        .metadata("format", "pt")
        .overwrite(true);
    let written = model
        .save_into(&mut store)
        .map_err(|e| e.to_string())
        .and_then(|_| canonical_header(&tmp).map_err(|e| e.to_string()));
    if let Err(e) = written {
        // A partial file would hold the space that a later try needs.
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(tmp.with_extension("canonical.tmp"));
        return Err(io(e));
    }
    std::fs::rename(&tmp, file).map_err(|e| io(e.to_string()))
}

/// Rewrites a safetensors file's JSON header with its keys in sorted order (the writer orders its metadata
/// differently from run to run), so that the same weights always give the same bytes. The data is unchanged.
fn canonical_header(file: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut src = std::fs::File::open(file)?;
    let mut len = [0u8; 8];
    src.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len) as usize;
    let mut header = vec![0u8; n];
    src.read_exact(&mut header)?;
    // serde_json's map is ordered by key: parsing and printing sorts every object.
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| bad("unreadable safetensors header"))?;
    let mut sorted = serde_json::to_vec(&value).map_err(|_| bad("header"))?;
    // The data must start 8-aligned, as the format asks; spaces pad the header.
    while (8 + sorted.len()) % 8 != 0 {
        sorted.push(b' ');
    }
    let out = file.with_extension("canonical.tmp");
    {
        let mut dst = std::io::BufWriter::new(std::fs::File::create(&out)?);
        dst.write_all(&(sorted.len() as u64).to_le_bytes())?;
        dst.write_all(&sorted)?;
        src.seek(SeekFrom::Start(8 + n as u64))?;
        std::io::copy(&mut src, &mut dst)?;
        dst.flush()?;
    }
    std::fs::rename(&out, file)
}

/// The FNV-1a 64 offset basis: the hash of no bytes.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into an FNV-1a 64 hash.
pub fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= *b as u64;
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The most a safetensors header may hold (the `safetensors` crate's own bound).
const MAX_HEADER: u64 = 100 << 20;

/// One tensor of a weight file, located but not read: (name, dtype, shape, file, byte range in the file).
type TensorEntry = (String, String, Vec<u64>, PathBuf, std::ops::Range<u64>);

/// The tensors a safetensors file's header lists, each checked to lie inside the file.
fn tensor_entries(file: &Path) -> Result<Vec<TensorEntry>, ModelError> {
    use std::io::Read;
    let bad = |reason: String| ModelError::Io {
        file: file.to_path_buf(),
        reason,
    };
    let mut f = std::fs::File::open(file).map_err(|e| bad(e.to_string()))?;
    let size = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || 8 + n > size {
        return Err(bad(format!(
            "the safetensors header claims {n} bytes, the file has {size}"
        )));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text).map_err(|e| bad(e.to_string()))?;
    let header: serde_json::Value =
        serde_json::from_slice(&text).map_err(|_| bad("unreadable safetensors header".into()))?;
    let data_start = 8 + n;
    let mut entries = Vec::new();
    for (name, t) in header.as_object().into_iter().flatten() {
        if name == "__metadata__" {
            continue;
        }
        let field = |k: &str| {
            t.get(k)
                .ok_or_else(|| bad(format!("tensor {name}: no `{k}`")))
        };
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
        let shape: Vec<u64> = field("shape")?
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .unwrap_or_default();
        let range = field("data_offsets")?
            .as_array()
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)))
            .filter(|(a, b)| a <= b && *b <= size - data_start)
            .ok_or_else(|| bad(format!("tensor {name}: data offsets outside the file")))?;
        let bytes = data_start + range.0..data_start + range.1;
        entries.push((name.clone(), dtype, shape, file.to_path_buf(), bytes));
    }
    Ok(entries)
}

/// Folds everything `reader` yields into an FNV-1a 64 hash, read through `buf`.
pub fn fnv1a_read(
    hash: &mut u64,
    mut reader: impl std::io::Read,
    buf: &mut [u8],
) -> std::io::Result<()> {
    loop {
        let n = reader.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        fnv1a(hash, &buf[..n]);
    }
}

/// A digest of what a model folder's weights are — every tensor's name, dtype, shape and values, in name
/// order — independent of how the files lay them out (header order, metadata, sharding): FNV-1a 64, hex.
/// The values are streamed from disk, so a model of any size is digested in constant memory.
pub fn weights_digest(dir: &Path) -> Result<String, ModelError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut tensors = Vec::new();
    for file in weight_files(dir)? {
        tensors.extend(tensor_entries(&file)?);
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = FNV_OFFSET;
    let mut buf = vec![0u8; 1 << 20];
    for (name, dtype, shape, file, range) in &tensors {
        let mut eat = |bytes: &[u8]| fnv1a(&mut h, bytes);
        eat(name.as_bytes());
        eat(&[0]);
        eat(dtype.as_bytes());
        eat(&[0]);
        eat(&(shape.len() as u64).to_le_bytes());
        for d in shape {
            eat(&d.to_le_bytes());
        }
        eat(&(range.end - range.start).to_le_bytes());
        let io = |e: std::io::Error| ModelError::Io {
            file: file.clone(),
            reason: e.to_string(),
        };
        let mut f = std::fs::File::open(file).map_err(io)?;
        f.seek(SeekFrom::Start(range.start)).map_err(io)?;
        fnv1a_read(&mut h, f.take(range.end - range.start), &mut buf).map_err(io)?;
    }
    Ok(format!("{h:016x}"))
}

/// Builds a model from a folder: `config.json` parsed by `parse`, built by `init`, weights loaded with `options`.
pub fn load_dir<B: Backend, C, M: Module<B>>(
    dir: &Path,
    parse: impl FnOnce(&serde_json::Value, &Path) -> Result<C, ModelError>,
    init: impl FnOnce(&C) -> M,
    options: &LoadOptions,
) -> Result<M, ModelError> {
    let file = dir.join("config.json");
    let config = parse(&crate::diffusers_json::read_json(&file)?, &file)?;
    load_safetensors_with(init(&config), &weight_files(dir)?, options)
}

/// Writes a diffusers model folder: `config.json` and `diffusion_pytorch_model.safetensors`.
pub fn save_diffusers_dir<B: Backend, M: Module<B>>(
    model: &M,
    config: &serde_json::Value,
    dir: &Path,
) -> Result<(), ModelError> {
    save_dir(model, config, dir, "diffusion_pytorch_model.safetensors")
}

/// Writes a model folder: `config.json` and the weights as `weights_name` (transformers uses
/// `model.safetensors`).
pub fn save_dir<B: Backend, M: Module<B>>(
    model: &M,
    config: &serde_json::Value,
    dir: &Path,
    weights_name: &str,
) -> Result<(), ModelError> {
    let file = dir.join("config.json");
    let io = |e: std::io::Error| ModelError::Io {
        file: file.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Both files are written in full before either replaces its predecessor: a failed write (a full disk)
    // leaves the previous folder as it was.
    let tmp = dir.join("config.json.tmp");
    if let Err(e) = std::fs::write(&tmp, serde_json::to_string_pretty(config).expect("JSON")) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Err(e) = save_safetensors(model, &dir.join(weights_name)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &file).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn header_len(bytes: &[u8]) -> usize {
        u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
    }

    #[test]
    fn a_sharded_index_cannot_name_files_outside_the_folder() {
        let dir = std::env::temp_dir().join(format!("codi-io-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = dir.join("diffusion_pytorch_model.safetensors.index.json");
        for bad in [
            "../secret.safetensors",
            "/etc/passwd",
            "sub/a.safetensors",
            "..",
            "",
        ] {
            let json = serde_json::json!({"weight_map": {"w": bad}});
            std::fs::write(&index, json.to_string()).unwrap();
            let e = weight_files(&dir).unwrap_err().to_string();
            assert!(
                e.contains("must be files in the model's folder"),
                "{bad}: {e}"
            );
            assert!(e.contains("index.json"), "{e}");
        }
        let json = serde_json::json!({"weight_map": {"w": "a.safetensors", "v": "a.safetensors"}});
        std::fs::write(&index, json.to_string()).unwrap();
        let e = weight_files(&dir).unwrap_err().to_string();
        assert!(
            e.contains("names the shard \"a.safetensors\", which is not in the folder"),
            "{e}"
        );
        std::fs::write(dir.join("a.safetensors"), b"").unwrap();
        assert_eq!(weight_files(&dir).unwrap(), vec![dir.join("a.safetensors")]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn exports_are_byte_reproducible_and_the_digest_ignores_layout_but_not_values() {
        let dir = std::env::temp_dir().join(format!("codi-io-digest-{}", std::process::id()));
        let device = Default::default();
        let layer = crate::layers::LinearConfig::new(4, 3).init::<Flex>(&device);
        let cfg = serde_json::json!({"_class_name": "Test"});
        let (a, b) = (dir.join("a"), dir.join("b"));
        save_diffusers_dir(&layer, &cfg, &a).unwrap();
        save_diffusers_dir(&layer, &cfg, &b).unwrap();
        let file = |d: &Path| std::fs::read(d.join("diffusion_pytorch_model.safetensors")).unwrap();
        assert_eq!(
            file(&a),
            file(&b),
            "two exports of the same weights differ in bytes"
        );
        let digest = weights_digest(&a).unwrap();
        assert_eq!(weights_digest(&b).unwrap(), digest);

        // The same tensors with the header written in another order (and other metadata): same digest.
        let bytes = file(&a);
        let n = header_len(&bytes);
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let mut entries: Vec<String> = header
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| format!("{}:{}", serde_json::json!(k), v))
            .collect();
        entries.reverse();
        let mut other = format!(
            "{{\"__metadata__\":{{\"producer\":\"elsewhere\"}},{}}}",
            entries.join(",")
        );
        while (8 + other.len()) % 8 != 0 {
            other.push(' ');
        }
        let mut moved = (other.len() as u64).to_le_bytes().to_vec();
        moved.extend_from_slice(other.as_bytes());
        moved.extend_from_slice(&bytes[8 + n..]);
        assert_ne!(moved, bytes);
        std::fs::write(b.join("diffusion_pytorch_model.safetensors"), &moved).unwrap();
        assert_eq!(
            weights_digest(&b).unwrap(),
            digest,
            "the digest depends on the header's layout"
        );

        // One value changed: another digest.
        let mut changed = bytes.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        std::fs::write(b.join("diffusion_pytorch_model.safetensors"), &changed).unwrap();
        assert_ne!(weights_digest(&b).unwrap(), digest);
        std::fs::remove_dir_all(&dir).ok();
    }
}
