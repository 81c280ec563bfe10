//! Image folders in the `imagefolder` convention (tests/fixtures/image-folder, made by
//! tests/fixtures/generate/image_folder.py): columns, caption files, crops and flips, and every bad input
//! named.

use std::path::{Path, PathBuf};

use codi_train::data::fashion_mnist::Split;
use codi_train::data::imagefolder::{is_image_folder, FolderConfig, ImageFolder};
use codi_train::distill::data::{eval_pairs, PairMaker};
use codi_train::distill::task_source;
use codi_train::tasks::{InpaintConfig, SrConfig, TaskKind};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/image-folder")
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn config() -> FolderConfig {
    FolderConfig::new().with_resolution(16)
}

fn open(dir: &Path, config: &FolderConfig, task: TaskKind) -> Result<ImageFolder, String> {
    let maker = maker(task);
    ImageFolder::open(dir, Split::Train, &maker.folder_columns(config), config)
        .map_err(|e| e.to_string())
}

fn maker(task: TaskKind) -> PairMaker {
    PairMaker::Builtin {
        task,
        sr: SrConfig::new().with_jpeg_quality(Some(50)),
        inpaint: InpaintConfig::for_resolution(16),
    }
}

/// A copy of the fixture to break.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codi-imagefolder-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for f in ["images/000.jpg", "images/001.png", "images/002.webp"] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
    }
    dir
}

fn write_metadata(dir: &Path, rows: &[&str]) {
    std::fs::write(dir.join("metadata.jsonl"), rows.join("\n")).unwrap();
}

#[test]
fn metadata_columns_give_image_caption_and_conditions() {
    let dir = fixture();
    assert!(is_image_folder(&dir));
    assert!(!is_image_folder(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/fashion-mnist-subset")
            .as_path()
    ));
    let images = open(&dir, &config(), TaskKind::SuperResolution).unwrap();
    assert_eq!(images.len(), 20);
    let item = images.load(0, &mut rng(0)).unwrap();
    assert_eq!(item.image.pixels.len(), 3 * 16 * 16);
    assert_eq!(item.image.caption, "a red circle on a green background");
    assert!(item.condition.is_none());
    assert!(item.image.pixels.iter().all(|v| (0.0..=1.0).contains(v)));

    // ControlNet: the edge map, cut at the same place as the image.
    let centred = config().with_center_crop(true);
    let controlnet = open(&dir, &centred, TaskKind::ControlNet).unwrap();
    let item = controlnet.load(3, &mut rng(0)).unwrap();
    let edges = item.condition.unwrap();
    assert_eq!(edges.len(), 3 * 16 * 16);
    assert!(edges.iter().any(|&v| v > 0.5) && edges.iter().any(|&v| v < 0.5));

    // InstructPix2Pix: target = the edited image, condition = the input, text = the edit.
    let edit = open(&dir, &centred, TaskKind::Edit).unwrap();
    let item = edit.load(0, &mut rng(0)).unwrap();
    assert_eq!(item.image.caption, "make it darker");
    let input = item.condition.unwrap();
    let (before, after): (f32, f32) = (input.iter().sum(), item.image.pixels.iter().sum());
    assert!(after < 0.6 * before, "darker: {after} vs {before}");

    // The pairs of every task, at the folder's resolution.
    for task in TaskKind::ALL {
        let folder = Some(centred.clone());
        let source = task_source(
            &maker(task),
            &codi_train::data::mixed::DataConfig::new(),
            folder.as_ref(),
            &dir,
            Split::Test,
        )
        .unwrap();
        let pairs = eval_pairs(source, maker(task), 1, 4).unwrap();
        assert_eq!(pairs.len(), 4, "{task:?}");
        for p in &pairs {
            assert_eq!(
                p.condition.len(),
                task.condition_channels() * 16 * 16,
                "{task:?}"
            );
            assert_eq!(p.target.len(), 3 * 16 * 16);
        }
    }
}

#[test]
fn caption_files_crops_and_flips() {
    let captions = open(
        &fixture().join("captions"),
        &config(),
        TaskKind::SuperResolution,
    )
    .unwrap();
    assert_eq!(captions.len(), 20);
    let item = captions.load(1, &mut rng(0)).unwrap();
    assert_eq!(item.image.caption, "a green square on a yellow background");

    // Image 0 is 40×32: a random square cut moves with the seed, a centred one does not.
    let random = open(&fixture(), &config(), TaskKind::SuperResolution).unwrap();
    let cuts: Vec<Vec<f32>> = (0..6)
        .map(|s| random.load(0, &mut rng(s)).unwrap().image.pixels)
        .collect();
    assert!(cuts.iter().any(|c| *c != cuts[0]), "random crops differ");
    let centred = open(
        &fixture(),
        &config().with_center_crop(true),
        TaskKind::SuperResolution,
    )
    .unwrap();
    let a = centred.load(0, &mut rng(1)).unwrap().image.pixels;
    assert_eq!(a, centred.load(0, &mut rng(2)).unwrap().image.pixels);
    // A flip mirrors rows: some seed flips, and its image is the mirror of the unflipped one.
    let flipping = open(
        &fixture(),
        &config().with_center_crop(true).with_random_flip(true),
        TaskKind::SuperResolution,
    )
    .unwrap();
    let mirrored: Vec<f32> = (0..3 * 16)
        .flat_map(|row| {
            a[row * 16..row * 16 + 16]
                .iter()
                .rev()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let flips = (0..8)
        .map(|s| flipping.load(0, &mut rng(s)).unwrap().image.pixels)
        .filter(|p| p.iter().zip(&mirrored).all(|(x, y)| (x - y).abs() < 1e-5))
        .count();
    assert!((1..8).contains(&flips), "{flips} of 8 flipped");
}

#[test]
fn bad_folders_are_named_and_refused_or_skipped() {
    let dir = scratch("bad");
    let refused = |rows: &[&str]| {
        write_metadata(&dir, rows);
        open(&dir, &config(), TaskKind::SuperResolution).unwrap_err()
    };
    let e = refused(&[r#"{"file_name": "../images/000.jpg", "text": "x"}"#]);
    assert!(
        e.contains("metadata.jsonl") && e.contains("line 1") && e.contains("not a path inside"),
        "{e}"
    );
    let e = refused(&[
        r#"{"file_name": "images/000.jpg"}"#,
        r#"{"file_name": "/etc/passwd"}"#,
    ]);
    assert!(
        e.contains("line 2") && e.contains("not a path inside"),
        "{e}"
    );
    let e = refused(&[r#"{"file_name": "images/404.jpg"}"#]);
    assert!(e.contains("'images/404.jpg' is not a file"), "{e}");
    let e = refused(&[r#"{"text": "no image"}"#]);
    assert!(e.contains("no image column"), "{e}");
    let e = refused(&[]);
    assert!(e.contains("metadata.jsonl") && e.contains("no rows"), "{e}");
    let e = refused(&["{not json"]);
    assert!(e.contains("line 1: not a JSON object"), "{e}");
    let e = refused(&[r#"{"file_name": "images/000.jpg", "text": 3}"#]);
    assert!(e.contains("neither a string nor a list"), "{e}");

    // A task whose column the rows lack.
    write_metadata(&dir, &[r#"{"file_name": "images/000.jpg", "text": "x"}"#]);
    let e = open(&dir, &config(), TaskKind::ControlNet).unwrap_err();
    assert!(
        e.contains("no image column 'conditioning_image' or 'conditioning_image_file_name'"),
        "{e}"
    );
    // The `<column>_file_name` spelling, and a list of captions.
    write_metadata(
        &dir,
        &[
            r#"{"file_name": "images/000.jpg", "conditioning_image_file_name": "images/001.png", "text": ["a", "b"]}"#,
        ],
    );
    let f = open(&dir, &config(), TaskKind::ControlNet).unwrap();
    let texts: std::collections::BTreeSet<String> = (0..16)
        .map(|s| f.load(0, &mut rng(s)).unwrap().image.caption)
        .collect();
    assert_eq!(texts.len(), 2);

    // A corrupt image: named at opening, or skipped and counted.
    std::fs::write(dir.join("images/bad.jpg"), b"\xff\xd8 truncated").unwrap();
    let rows = [
        r#"{"file_name": "images/000.jpg"}"#,
        r#"{"file_name": "images/bad.jpg"}"#,
    ];
    let e = refused(&rows);
    assert!(
        e.contains("bad.jpg") && e.contains("not a readable image"),
        "{e}"
    );
    let skipping = config().with_skip_bad_images(true);
    let f = open(&dir, &skipping, TaskKind::SuperResolution).unwrap();
    assert_eq!(
        (
            f.len(),
            f.skipped.load(std::sync::atomic::Ordering::Relaxed)
        ),
        (1, 1)
    );

    // An image whose header reads but whose data is cut: an error when it is decoded, naming it.
    let whole = std::fs::read(fixture().join("images/001.png")).unwrap();
    std::fs::write(dir.join("images/cut.png"), &whole[..whole.len() / 2]).unwrap();
    write_metadata(&dir, &[r#"{"file_name": "images/cut.png"}"#]);
    let f = open(&dir, &config(), TaskKind::SuperResolution).unwrap();
    let e = f.load(0, &mut rng(0)).unwrap_err().to_string();
    assert!(
        e.contains("cut.png") && e.contains("not a readable image"),
        "{e}"
    );

    // No metadata and no images.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = open(&empty, &config(), TaskKind::SuperResolution).unwrap_err();
    assert!(e.contains("no metadata.jsonl and no images"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
