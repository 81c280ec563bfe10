//! One run per run folder: a second process pointed at a folder in use would interleave its checkpoints and
//! logs with the first one's. `codi.lock` holds the owner's process id; it is created exclusively and removed
//! when the run ends. A lock whose process no longer exists (a killed run) is taken over.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::TrainError;

/// The held lock of a run folder; released on drop.
#[derive(Debug)]
pub struct RunLock {
    file: PathBuf,
}

impl RunLock {
    /// Takes `dir/codi.lock`, or explains which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, TrainError> {
        let file = dir.join("codi.lock");
        let err = |reason: String| TrainError::Data {
            file: file.clone(),
            reason,
        };
        // Twice at most: the second try follows the removal of a stale lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(|e| err(e.to_string()))?;
                    return Ok(Self { file });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&file).unwrap_or_default();
                    let pid = owner.trim().parse::<u32>().ok();
                    if pid.is_some_and(process_alive) {
                        return Err(err(format!(
                            "the run folder is in use by process {} (another codi run); wait for it, \
                             give this run another folder, or remove this file if that process is not codi",
                            pid.unwrap_or_default()
                        )));
                    }
                    // A killed run's lock (or an unreadable one): take it over.
                    std::fs::remove_file(&file)
                        .or_else(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => Ok(()),
                            _ => Err(e),
                        })
                        .map_err(|e| err(format!("cannot remove a stale lock: {e}")))?;
                }
                Err(e) => return Err(err(format!("cannot create the run's lock: {e}"))),
            }
        }
        Err(err("another run took the lock at the same moment".into()))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Whether a process with this id exists (Linux: `/proc/<pid>`; elsewhere every process is taken as alive,
/// so a stale lock is removed by hand).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_refused_naming_the_owner_and_a_dead_owners_lock_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("codi-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&std::process::id().to_string()) && err.contains("codi.lock"),
            "{err}"
        );
        drop(first);
        assert!(!dir.join("codi.lock").exists(), "the lock outlived its run");
        let again = RunLock::acquire(&dir).unwrap();
        drop(again);
        // A lock left by a process that no longer exists (pid_max on Linux is at most 2^22).
        std::fs::write(dir.join("codi.lock"), "4294967295\n").unwrap();
        let taken = RunLock::acquire(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("codi.lock"))
                .unwrap()
                .trim(),
            std::process::id().to_string()
        );
        drop(taken);
        std::fs::remove_dir_all(&dir).ok();
    }
}
