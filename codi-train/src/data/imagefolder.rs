//! A folder of images in Hugging Face's `imagefolder` convention, as diffusers' training scripts read it:
//! `metadata.jsonl` with one JSON object per image (`file_name` and the caption column; further image columns
//! such as `conditioning_image` hold paths relative to the folder, under their own name or as
//! `<column>_file_name`), or no metadata and a `<stem>.txt` caption beside each image. A folder with a
//! `train/` subfolder takes its training split from there and its test split from `test/` or `validation/`.
//! Files are checked when the folder is opened (they exist, stay inside the folder, have an image header);
//! pixels are decoded only when an item is read.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use burn::config::Config;
use codi_pipelines::image_file::{has_image_extension, probe, read_rgb, square, Window};
use rand::Rng;
use serde_json::{Map, Value};

use super::fashion_mnist::Split;
use super::ImageItem;
use crate::error::TrainError;

/// Which columns an image folder is read from and how its images become training images.
#[derive(Config, Debug, PartialEq)]
pub struct FolderConfig {
    /// Side of the square training images: the largest square of each image (centred, or placed at random
    /// with `center_crop` false) resized to it.
    #[config(default = 512)]
    pub resolution: usize,
    #[config(default = false)]
    pub center_crop: bool,
    /// Mirror each image left–right with probability ½ (its conditioning image with it).
    #[config(default = false)]
    pub random_flip: bool,
    /// The target image (imagefolder's `file_name`).
    #[config(default = "\"image\".to_string()")]
    pub image_column: String,
    #[config(default = "\"text\".to_string()")]
    pub caption_column: String,
    /// The condition image of the `controlnet` task.
    #[config(default = "\"conditioning_image\".to_string()")]
    pub conditioning_image_column: String,
    /// InstructPix2Pix's columns for the editing task: the image before, the instruction, the image after.
    #[config(default = "\"input_image\".to_string()")]
    pub original_image_column: String,
    #[config(default = "\"edit_prompt\".to_string()")]
    pub edit_prompt_column: String,
    #[config(default = "\"edited_image\".to_string()")]
    pub edited_image_column: String,
    /// Skip (and count) images that cannot be read instead of stopping with an error.
    #[config(default = false)]
    pub skip_bad_images: bool,
}

/// The columns one task reads: the image to generate, an optional condition image, the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub target: String,
    pub condition: Option<String>,
    pub text: String,
}

impl FolderConfig {
    /// Columns of the single-image tasks (the condition derived from the image).
    pub fn image_columns(&self) -> Columns {
        Columns {
            target: self.image_column.clone(),
            condition: None,
            text: self.caption_column.clone(),
        }
    }

    /// Columns of a ControlNet-style task: the condition is the conditioning image.
    pub fn controlnet_columns(&self) -> Columns {
        Columns {
            condition: Some(self.conditioning_image_column.clone()),
            ..self.image_columns()
        }
    }

    /// InstructPix2Pix's columns: condition = the original, target = the edited image, text = the edit.
    pub fn edit_columns(&self) -> Columns {
        Columns {
            target: self.edited_image_column.clone(),
            condition: Some(self.original_image_column.clone()),
            text: self.edit_prompt_column.clone(),
        }
    }
}

/// One image of the folder: files (absolute) and its captions (one drawn at random when there are several).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub target: PathBuf,
    pub condition: Option<PathBuf>,
    pub texts: Vec<String>,
}

/// Whether `dir` looks like an image folder (rather than Fashion-MNIST's IDX files).
pub fn is_image_folder(dir: &Path) -> bool {
    dir.join("metadata.jsonl").is_file()
        || dir.join("train").is_dir()
        || image_files(dir).is_ok_and(|f| !f.is_empty())
}

/// The folder of a split: `train/` and `test/` (or `validation/`) when `dir` has them, else `dir` itself.
pub fn split_dir(dir: &Path, split: Split) -> PathBuf {
    let train = dir.join("train");
    if !train.is_dir() {
        return dir.to_path_buf();
    }
    match split {
        Split::Train => train,
        Split::Test => ["test", "validation", "valid", "val"]
            .iter()
            .map(|s| dir.join(s))
            .find(|d| d.is_dir())
            .unwrap_or(train),
    }
}

/// An image folder's records and how to read them.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub dir: PathBuf,
    pub records: Arc<Vec<Record>>,
    pub config: FolderConfig,
    /// Images that could not be read and were skipped (at opening and while training).
    pub skipped: Arc<AtomicUsize>,
}

/// A decoded item: the target image and, when the task has one, its condition image, cut at the same place.
#[derive(Debug, Clone)]
pub struct FolderItem {
    pub image: ImageItem,
    pub condition: Option<Vec<f32>>,
}

fn data_error(file: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Data {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

impl ImageFolder {
    /// Opens the split of `dir` for a task reading `columns`; every file is checked (see the module).
    pub fn open(
        dir: &Path,
        split: Split,
        columns: &Columns,
        config: &FolderConfig,
    ) -> Result<Self, TrainError> {
        let dir = split_dir(dir, split);
        let metadata = dir.join("metadata.jsonl");
        let records = if metadata.is_file() {
            let rows = read_metadata(&dir, &metadata, columns)?;
            if rows.is_empty() {
                return Err(data_error(&metadata, "no rows: one JSON object per image"));
            }
            rows
        } else if let Some(c) = &columns.condition {
            return Err(data_error(
                &metadata,
                format!("missing: this task reads the column '{c}' from metadata.jsonl"),
            ));
        } else {
            caption_files(&dir)?
        };
        let skipped = Arc::new(AtomicUsize::new(0));
        let mut kept = Vec::with_capacity(records.len());
        for r in records {
            let checked = std::iter::once(&r.target)
                .chain(&r.condition)
                .try_for_each(|f| probe(f).map(|_| ()));
            match checked {
                Ok(()) => kept.push(r),
                Err(_) if config.skip_bad_images => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if kept.is_empty() {
            return Err(data_error(
                &dir,
                "no readable images: every one was skipped",
            ));
        }
        Ok(Self {
            dir,
            records: Arc::new(kept),
            config: config.clone(),
            skipped,
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Decodes record `index`, cut (and flipped) with randomness from `rng`.
    pub fn load(&self, index: usize, rng: &mut impl Rng) -> Result<FolderItem, TrainError> {
        let r = &self.records[index];
        let size = self.config.resolution;
        let image = read_rgb(&r.target)?;
        let (u, v) = match self.config.center_crop {
            true => (0.5, 0.5),
            false => (rng.random::<f64>(), rng.random::<f64>()),
        };
        let window = Window::at(image.width(), image.height(), u, v);
        let flip = self.config.random_flip && rng.random::<bool>();
        let text = match r.texts.len() {
            0 => String::new(),
            1 => r.texts[0].clone(),
            n => r.texts[rng.random_range(0..n)].clone(),
        };
        let condition = match &r.condition {
            Some(f) => Some(square(&read_rgb(f)?, window, size, flip)),
            None => None,
        };
        Ok(FolderItem {
            image: ImageItem {
                pixels: square(&image, window, size, flip),
                size,
                caption: text,
                label: 0,
            },
            condition,
        })
    }
}

/// A path from the metadata, which must name a file inside the folder.
fn inside(dir: &Path, name: &str, metadata: &Path, line: usize) -> Result<PathBuf, TrainError> {
    let rel = Path::new(name);
    let plain = !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(data_error(
            metadata,
            format!("line {line}: '{name}' is not a path inside the folder (no '..', no absolute paths)"),
        ));
    }
    let file = dir.join(rel);
    if !file.is_file() {
        return Err(data_error(
            metadata,
            format!("line {line}: '{name}' is not a file in {}", dir.display()),
        ));
    }
    Ok(file)
}

/// The value of an image column: under its name, as `<name>_file_name`, or (the target) as `file_name`.
fn image_value<'a>(
    row: &'a Map<String, Value>,
    column: &str,
    is_target: bool,
) -> Option<&'a Value> {
    row.get(column)
        .or_else(|| row.get(&format!("{column}_file_name")))
        .or_else(|| is_target.then(|| row.get("file_name")).flatten())
}

fn read_metadata(
    dir: &Path,
    metadata: &Path,
    columns: &Columns,
) -> Result<Vec<Record>, TrainError> {
    let text =
        std::fs::read_to_string(metadata).map_err(|e| data_error(metadata, e.to_string()))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| data_error(metadata, format!("line {line_no}: {reason}"));
        let row: Map<String, Value> =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let path_of = |column: &str, is_target: bool| -> Result<PathBuf, TrainError> {
            let v = image_value(&row, column, is_target).ok_or_else(|| {
                let spellings = if is_target {
                    format!("'{column}', '{column}_file_name' or 'file_name'")
                } else {
                    format!("'{column}' or '{column}_file_name'")
                };
                bad(format!("no image column {spellings}"))
            })?;
            let name = v
                .as_str()
                .ok_or_else(|| bad(format!("the image column '{column}' is not a string")))?;
            inside(dir, name, metadata, line_no)
        };
        let target = path_of(&columns.target, true)?;
        let condition = match &columns.condition {
            Some(c) => Some(path_of(c, false)?),
            None => None,
        };
        let texts = match row.get(&columns.text) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("'{}' holds a list with a non-string", columns.text)))?,
            Some(_) => {
                return Err(bad(format!(
                    "'{}' is neither a string nor a list of strings",
                    columns.text
                )))
            }
        };
        records.push(Record {
            target,
            condition,
            texts,
        });
    }
    Ok(records)
}

/// The image files under `dir` (recursively, hidden entries skipped), sorted.
fn image_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if has_image_extension(&path) {
                files.insert(path);
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// Images with `<stem>.txt` captions beside them (an image without one has the empty caption).
fn caption_files(dir: &Path) -> Result<Vec<Record>, TrainError> {
    let files = image_files(dir).map_err(|e| data_error(dir, e.to_string()))?;
    if files.is_empty() {
        return Err(data_error(
            dir,
            "no metadata.jsonl and no images (.png, .jpg, .webp, …) in the folder",
        ));
    }
    files
        .into_iter()
        .map(|target| {
            let caption = target.with_extension("txt");
            let texts = match caption.is_file() {
                true => vec![std::fs::read_to_string(&caption)
                    .map_err(|e| data_error(&caption, e.to_string()))?
                    .trim()
                    .to_string()],
                false => Vec::new(),
            };
            Ok(Record {
                target,
                condition: None,
                texts,
            })
        })
        .collect()
}
