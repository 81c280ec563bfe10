//! Checkpoints of a burn-train run: written through a temporary file and a rename (a kill mid-write leaves the
//! previous checkpoint intact), and found again for `--resume`.

use std::path::{Path, PathBuf};

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use serde::{de::DeserializeOwned, Serialize};

/// burn's named MessagePack recorder, made atomic. burn-train panics on a failed save (in its checkpointer
/// thread, whose panic reaches the caller without the reason), so the first failure is also kept here for
/// the error the run returns.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder {
    inner: NamedMpkFileRecorder<FullPrecisionSettings>,
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// A follower's: saves nothing and loads the file of the same name from this folder (the checkpoints
    /// the first replica of a data-parallel run writes).
    follows: Option<PathBuf>,
}

impl AtomicRecorder {
    /// A recorder that writes nothing and reads the checkpoints in `dir`.
    pub fn follower(dir: &Path) -> Self {
        Self {
            follows: Some(dir.to_path_buf()),
            ..Self::default()
        }
    }

    /// The first save that failed, if any: the file and the reason.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fail(&self, message: String, dir: Option<&Path>) -> RecorderError {
        // The MessagePack encoder's error hides the I/O error under it; a full disk is the usual cause.
        let message = match dir.and_then(disk_full) {
            Some(io) => format!("{message} ({io})"),
            None => message,
        };
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(message.clone());
        RecorderError::Unknown(message)
    }
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        if self.follows.is_some() {
            return Ok(());
        }
        let ext = <Self as FileRecorder<B>>::file_extension();
        let final_path = file.with_extension(ext);
        // The inner recorder sets the extension itself, so the temporary name differs in its stem.
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp_stem = file.with_file_name(format!(".partial-{}", name.unwrap_or_default()));
        let tmp = tmp_stem.with_extension(ext);
        if let Err(e) = Recorder::<B>::save_item(&self.inner, item, tmp_stem) {
            // Probed while the partial file still fills the disk; then removed, as it would hold the space
            // the next try needs.
            let error = self.fail(
                format!("{}: {e}", final_path.display()),
                final_path.parent(),
            );
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        std::fs::rename(&tmp, &final_path)
            .map_err(|e| self.fail(format!("{}: {e}", final_path.display()), None))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        if let (Some(dir), Some(name)) = (&self.follows, file.file_name()) {
            *file = dir.join(name);
        }
        Recorder::<B>::load_item(&self.inner, file)
    }
}

/// The I/O error of writing 64 KiB into `dir`, if that fails ("No space left on device" on a full disk).
fn disk_full(dir: &Path) -> Option<String> {
    use std::io::Write as _;
    let probe = dir.join(".space-probe");
    let result = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 1 << 16])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    result.err().map(|e| e.to_string())
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// The latest epoch with a complete checkpoint (model, optimizer and scheduler files) in `dir`.
pub fn latest_epoch(dir: &Path) -> Option<usize> {
    complete_epochs(dir).last().copied()
}

/// (kind, epoch) of a checkpoint file's name: `model-3.mpk` → ("model", 3); also optim and scheduler.
fn checkpoint_file(name: &str) -> Option<(&str, usize)> {
    let (kind, n) = name.strip_suffix(".mpk")?.rsplit_once('-')?;
    let kind = ["model", "optim", "scheduler"]
        .into_iter()
        .find(|k| *k == kind)?;
    Some((kind, n.parse().ok()?))
}

/// Epochs with a complete checkpoint in `dir`, ascending.
pub fn complete_epochs(dir: &Path) -> Vec<usize> {
    let mut v: Vec<usize> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = match checkpoint_file(&name)? {
                ("model", n) => n,
                _ => return None,
            };
            ["optim", "scheduler"]
                .iter()
                .all(|k| dir.join(format!("{k}-{n}.mpk")).exists())
                .then_some(n)
        })
        .collect();
    v.sort_unstable();
    v
}

/// The count-weighted mean of an epoch's validation loss from burn-train's log
/// (`<run>/valid/epoch-N/Loss.log`: one `value,count` line per batch).
pub fn valid_loss(run: &Path, epoch: usize) -> Option<f64> {
    let text = std::fs::read_to_string(run.join(format!("valid/epoch-{epoch}/Loss.log"))).ok()?;
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let (v, c) = line.split_once(',')?;
        let (v, c): (f64, f64) = (v.trim().parse().ok()?, c.trim().parse().ok()?);
        sum += v * c;
        count += c;
    }
    (count > 0.0).then(|| sum / count)
}

/// burn-train's retention rule — keep the last `keep_last` epochs and the one with the lowest validation
/// loss — applied to every checkpoint in the run folder. burn-train applies it only to the epochs of the
/// current process, so a resumed run kept every checkpoint from before the resume. → the epochs removed
pub fn apply_retention(run: &Path, keep_last: usize) -> std::io::Result<Vec<usize>> {
    let dir = run.join("checkpoint");
    let epochs = complete_epochs(&dir);
    let best = epochs
        .iter()
        .filter_map(|&e| valid_loss(run, e).map(|l| (l, e)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| e);
    let recent = epochs.len().saturating_sub(keep_last);
    let mut removed = Vec::new();
    for &e in &epochs[..recent] {
        if Some(e) == best {
            continue;
        }
        for kind in ["model", "optim", "scheduler"] {
            match std::fs::remove_file(dir.join(format!("{kind}-{e}.mpk"))) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        removed.push(e);
    }
    Ok(removed)
}

/// Removes the files of epochs after the latest complete checkpoint (a save that failed half-way, on a full
/// disk or a kill between its files) and the temporary files of interrupted saves: they hold space and are
/// overwritten anyway. → the files removed
pub fn remove_incomplete(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let latest = latest_epoch(dir).unwrap_or(0);
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // A save a kill interrupted: never renamed, never read.
        if name.starts_with(".partial-") {
            std::fs::remove_file(&path)?;
            removed.push(path);
            continue;
        }
        if checkpoint_file(name).is_some_and(|(_, e)| e > latest) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}
