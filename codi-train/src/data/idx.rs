//! The IDX format of MNIST-style datasets (big-endian header: magic, dimensions; then u8 data), raw or gzipped.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::TrainError;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The most bytes an IDX file may hold once decompressed (Fashion-MNIST's training images: 47 MB).
const MAX_BYTES: u64 = 4 << 30;

/// Reads `file` (gzip if it starts with the gzip magic). Fails with the file name on any inconsistency.
pub fn read_idx(file: &Path) -> Result<IdxArray, TrainError> {
    let err = |reason: String| TrainError::Data {
        file: file.to_path_buf(),
        reason,
    };
    let raw = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| err(format!("corrupt gzip data: {e}")))?;
        if out.len() as u64 > MAX_BYTES {
            return Err(err(format!(
                "decompresses to more than {MAX_BYTES} bytes: not an image dataset codi reads"
            )));
        }
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(err("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(err(format!(
            "IDX element type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(err("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| err(format!("IDX dimensions {dims:?} overflow")))?;
    if bytes.len().checked_sub(header) != Some(n) {
        return Err(err(format!(
            "IDX header says {dims:?} ({n} bytes) but the file holds {} data bytes",
            bytes.len() - header
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_raw_and_rejects_bad_files_with_the_name() {
        let dir = std::env::temp_dir().join(format!("codi-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok-idx1-ubyte");
        write(&ok, &[0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]);
        assert_eq!(
            read_idx(&ok).unwrap(),
            IdxArray {
                dims: vec![3],
                data: vec![7, 8, 9]
            }
        );
        let short = dir.join("short");
        write(&short, &[0, 0, 8, 1, 0, 0, 0, 4, 7, 8, 9]);
        let e = read_idx(&short).unwrap_err().to_string();
        assert!(
            e.contains("short") && e.contains("holds 3 data bytes"),
            "{e}"
        );
        let bad = dir.join("bad.gz");
        write(&bad, &[0x1f, 0x8b, 1, 2, 3]);
        assert!(read_idx(&bad)
            .unwrap_err()
            .to_string()
            .contains("corrupt gzip"));
        assert!(read_idx(&dir.join("missing"))
            .unwrap_err()
            .to_string()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
