//! Checkpoints of a burn-train run: written through a temporary file and a rename (a kill mid-write leaves the
//! previous checkpoint intact), and found again for `--resume`.

use std::path::{Path, PathBuf};

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use serde::{de::DeserializeOwned, Serialize};

/// burn's named MessagePack recorder, made atomic.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder {
    inner: NamedMpkFileRecorder<FullPrecisionSettings>,
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let ext = <Self as FileRecorder<B>>::file_extension();
        let final_path = file.with_extension(ext);
        // The inner recorder sets the extension itself, so the temporary name differs in its stem.
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp_stem = file.with_file_name(format!(".partial-{}", name.unwrap_or_default()));
        Recorder::<B>::save_item(&self.inner, item, tmp_stem.clone())?;
        std::fs::rename(tmp_stem.with_extension(ext), &final_path)
            .map_err(|e| RecorderError::Unknown(format!("{}: {e}", final_path.display())))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.inner, file)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// The latest epoch with a complete checkpoint (model, optimizer and scheduler files) in `dir`.
pub fn latest_epoch(dir: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(dir).ok()?;
    let epochs = entries.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let n: usize = name
            .strip_prefix("model-")?
            .strip_suffix(".mpk")?
            .parse()
            .ok()?;
        ["optim", "scheduler"]
            .iter()
            .all(|k| dir.join(format!("{k}-{n}.mpk")).exists())
            .then_some(n)
    });
    epochs.max()
}
