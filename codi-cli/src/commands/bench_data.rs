//! `codi bench data`: how fast training images come off the disk — read, decoded, cut to a square and resized
//! to `--resolution` by the image folder reader and the ordered data loader that `codi distill` uses — with one
//! thread and with `--workers` threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::DataLoader;
use burn::data::dataset::Dataset;
use clap::Args as ClapArgs;
use codi_core::backend::CpuBackend;
use codi_pipelines::image_file::write_rgb;
use codi_train::data::epoch::mix;
use codi_train::data::fashion_mnist::Split;
use codi_train::data::imagefolder::{FolderConfig, ImageFolder};
use codi_train::data::loader::OrderedLoader;
use rand::SeedableRng;
use serde::Serialize;

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// An image folder (`metadata.jsonl` or images with `.txt` captions).
    #[arg(long)]
    data: PathBuf,
    /// First write this many photo-like 1024×768 JPEGs (quality 90) with captions into --data.
    #[arg(long)]
    synthesize: Option<usize>,
    #[arg(long, value_parser = super::at_least_one, default_value_t = 512)]
    resolution: usize,
    /// Loader threads for the parallel measurement (default: one per core).
    #[arg(long, value_parser = super::at_least_one)]
    workers: Option<usize>,
    #[arg(long, value_parser = super::at_least_one, default_value_t = 16)]
    batch_size: usize,
    /// Images read per measurement (the folder is read round and round).
    #[arg(long, value_parser = super::at_least_one, default_value_t = 256)]
    images: usize,
    #[arg(long)]
    center_crop: bool,
    #[arg(long)]
    random_flip: bool,
    #[arg(long)]
    json: bool,
}

/// `images` positions over the folder, each with its own cut and flip.
#[derive(Clone)]
struct Positions {
    folder: ImageFolder,
    len: usize,
}

impl Dataset<usize> for Positions {
    fn get(&self, index: usize) -> Option<usize> {
        (index < self.len).then_some(index)
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// Decodes and cuts a batch's images as training does; the batch is the number of pixel values made.
#[derive(Clone)]
struct Decode(ImageFolder);

impl Batcher<CpuBackend, usize, Result<usize, String>> for Decode {
    fn batch(
        &self,
        items: Vec<usize>,
        _: &burn::backend::flex::FlexDevice,
    ) -> Result<usize, String> {
        items
            .iter()
            .map(|&i| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(0, 0, i as u64));
                let item = self.0.load(i % self.0.len(), &mut rng);
                item.map(|item| item.image.pixels.len())
                    .map_err(|e| e.to_string())
            })
            .sum()
    }
}

#[derive(Serialize)]
struct Row {
    threads: usize,
    images: usize,
    seconds: f64,
    images_per_second: f64,
}

fn measure(positions: &Positions, batch_size: usize, workers: usize) -> Result<Row> {
    let loader: OrderedLoader<CpuBackend, usize, Result<usize, String>> = OrderedLoader::new(
        Arc::new(positions.clone()),
        Arc::new(Decode(positions.folder.clone())),
        batch_size,
        workers,
        Default::default(),
        None,
    );
    let start = Instant::now();
    let values: usize = loader
        .iter()
        .sum::<Result<usize, String>>()
        .map_err(anyhow::Error::msg)?;
    let seconds = start.elapsed().as_secs_f64();
    let images = positions.len;
    if values != images * 3 * positions.folder.config.resolution.pow(2) {
        bail!("the loader made {values} values for {images} images");
    }
    Ok(Row {
        threads: workers.max(1),
        images,
        seconds,
        images_per_second: images as f64 / seconds,
    })
}

/// Writes `n` JPEGs of smooth colour fields with texture (sizes like photographs') and a caption for each.
fn synthesize(dir: &Path, n: usize) -> Result<()> {
    let (w, h) = (1024usize, 768usize);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = mix(state, 1, 2);
        state
    };
    for i in 0..n {
        let base: Vec<f32> = (0..9).map(|_| (next() % 1000) as f32 / 1000.0).collect();
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let grain = (next() % 24) as f32 - 12.0;
                for c in 0..3 {
                    let wave = (base[c + 3] * 20.0 * u + base[c + 6] * 14.0 * v).sin();
                    let value = 255.0 * (0.5 * base[c] + 0.25 * wave + 0.25 * u * v) + grain;
                    rgb[(y * w + x) * 3 + c] = value.clamp(0.0, 255.0) as u8;
                }
            }
        }
        write_rgb(&dir.join(format!("{i:05}.jpg")), w, h, &rgb)?;
        std::fs::write(
            dir.join(format!("{i:05}.txt")),
            format!("a photograph, number {i}"),
        )?;
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.synthesize {
        std::fs::create_dir_all(&a.data)?;
        synthesize(&a.data, n)?;
        eprintln!("wrote {n} JPEGs of 1024×768 to {}", a.data.display());
    }
    let config = FolderConfig::new()
        .with_resolution(a.resolution)
        .with_center_crop(a.center_crop)
        .with_random_flip(a.random_flip);
    let folder = ImageFolder::open(&a.data, Split::Train, &config.image_columns(), &config)?;
    if folder.is_empty() {
        bail!("{}: no images", a.data.display());
    }
    let positions = Positions {
        folder,
        len: a.images,
    };
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rows = vec![
        measure(&positions, a.batch_size, 0)?,
        measure(&positions, a.batch_size, workers)?,
    ];
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{}: {} images, read, decoded, cut and resized to {} px, batches of {}",
        a.data.display(),
        positions.folder.len(),
        a.resolution,
        a.batch_size
    );
    println!("threads  images  seconds  images/s");
    for r in rows {
        println!(
            "{:>7}  {:>6}  {:>7.2}  {:>8.1}",
            r.threads, r.images, r.seconds, r.images_per_second
        );
    }
    Ok(())
}
