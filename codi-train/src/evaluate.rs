//! Evaluation of a text-to-image model with the evaluation classifier: class agreement of samples with their
//! prompt's class, and the Fréchet distance (FD) of the classifier's features to the test set, next to the
//! floor (the FD of as many real test images).

use burn::data::dataset::Dataset;
use burn::tensor::{backend::Backend, Tensor};
use codi_core::metrics::{frechet_distance, FeatureStats};
use codi_core::{Sampler, SeededNoise};
use codi_models::classifier::Classifier;
use serde::Serialize;

use crate::data::batch::images_tensor;
use crate::data::fashion_mnist::{caption, CLASSES};
use crate::data::ImageItem;
use crate::error::TrainError;
use codi_pipelines::TextToImage;

/// Classifier features and predicted labels of images in [0, 1]. images: [n, 3, H, W] → (n × dim, labels)
pub fn features_and_labels<B: Backend>(
    classifier: &Classifier<B>,
    images01: Tensor<B, 4>,
) -> (Vec<f32>, usize, Vec<usize>) {
    let (f, logits) = classifier.features_and_logits(images01.mul_scalar(2.0).sub_scalar(1.0));
    let dim = f.dims()[1];
    let labels = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|l| l as usize)
        .collect();
    (codi_core::tensor_ops::to_vec(f), dim, labels)
}

/// Features of dataset items `indices`, in batches. → (n × dim, dim)
pub fn dataset_features<B: Backend>(
    classifier: &Classifier<B>,
    data: &impl Dataset<ImageItem>,
    indices: &[usize],
    device: &B::Device,
) -> (Vec<f32>, usize) {
    let mut out = Vec::new();
    let mut dim = 0;
    for chunk in indices.chunks(256) {
        let items: Vec<ImageItem> = chunk.iter().filter_map(|&i| data.get(i)).collect();
        // images_tensor is already in the classifier's [−1, 1].
        let f = classifier.features(images_tensor::<B>(&items, device));
        dim = f.dims()[1];
        out.extend(codi_core::tensor_ops::to_vec(f));
    }
    (out, dim)
}

/// Classifier features and labels of images in [0, 1], each a flat 3 × size × size vector, classified in
/// batches. → (n × dim features, dim, labels)
pub fn image_features<B: Backend>(
    classifier: &Classifier<B>,
    images: &[Vec<f32>],
    size: usize,
    device: &B::Device,
) -> (Vec<f32>, usize, Vec<usize>) {
    let (mut feats, mut dim, mut labels) = (Vec::new(), 0, Vec::new());
    for chunk in images.chunks(256) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let t = Tensor::<B, 4>::from_data(
            burn::tensor::TensorData::new(flat, [chunk.len(), 3, size, size]),
            device,
        );
        let (f, d, l) = features_and_labels(classifier, t);
        feats.extend(f);
        labels.extend(l);
        dim = d;
    }
    (feats, dim, labels)
}

/// Feature statistics of images in [0, 1], each a flat 3 × size × size vector.
fn image_stats<B: Backend>(
    classifier: &Classifier<B>,
    images: &[Vec<f32>],
    size: usize,
    device: &B::Device,
) -> FeatureStats {
    let (feats, dim, _) = image_features(classifier, images, size, device);
    FeatureStats::from_features(&feats, dim)
}

#[derive(Debug, Clone, Serialize)]
pub struct TeacherEval {
    pub samples: usize,
    pub sampler: String,
    pub steps: usize,
    pub guidance: f64,
    pub seed: u64,
    /// Fraction of samples the classifier labels as their prompt's class.
    pub class_agreement: f64,
    pub per_class_agreement: Vec<(String, f64)>,
    /// FD (classifier features) of the samples to the reference half of the test set.
    pub fd: f64,
    /// FD of as many real test images (the other half) to the same reference.
    pub fd_floor: f64,
    pub reference_images: usize,
    pub wall_time_s: f64,
}

/// Samples `n` images (prompts cycling over the Fashion-MNIST classes) and scores them. `test` is
/// Fashion-MNIST's test split. Also returns the first `grid_per_class` samples of every class, class-major,
/// for a grid. → (report, grid images [classes·grid_per_class, 3, H, W])
#[allow(clippy::too_many_arguments)]
pub fn evaluate_teacher<B: Backend>(
    pipe: &TextToImage<B>,
    classifier: &Classifier<B>,
    test: &impl Dataset<ImageItem>,
    n: usize,
    sampler: &Sampler,
    guidance: f64,
    seed: u64,
    batch: usize,
    grid_per_class: usize,
    device: &B::Device,
) -> Result<(TeacherEval, Tensor<B, 4>), TrainError> {
    let start = std::time::Instant::now();
    let k = CLASSES.len();
    let mut noise = SeededNoise::new(seed);
    let mut feats = Vec::new();
    let mut dim = 0;
    let mut hits = vec![(0usize, 0usize); k];
    let mut grid: Vec<Vec<Tensor<B, 4>>> = vec![Vec::new(); k];
    let mut done = 0;
    while done < n {
        let m = batch.min(n - done);
        let labels: Vec<usize> = (done..done + m).map(|i| i % k).collect();
        let captions: Vec<String> = labels.iter().map(|&l| caption(l)).collect();
        let prompts: Vec<&str> = captions.iter().map(|s| s.as_str()).collect();
        let images = pipe.generate(
            &prompts,
            sampler,
            guidance,
            32,
            &mut noise,
            device,
            |_, _| {},
        )?;
        let (f, d, pred) = features_and_labels(classifier, images.clone());
        feats.extend(f);
        dim = d;
        for (i, (&want, got)) in labels.iter().zip(pred).enumerate() {
            hits[want].0 += usize::from(want == got);
            hits[want].1 += 1;
            if grid[want].len() < grid_per_class {
                grid[want].push(images.clone().narrow(0, i, 1));
            }
        }
        done += m;
        println!(
            "[eval] {done}/{n} samples, agreement so far {:.3} ({:.0} s)",
            hits.iter().map(|h| h.0).sum::<usize>() as f64 / done as f64,
            start.elapsed().as_secs_f64()
        );
    }
    // Reference: even test indices; floor: n odd test indices.
    let reference: Vec<usize> = (0..test.len()).step_by(2).collect();
    let floor_idx: Vec<usize> = (1..test.len()).step_by(2).take(n).collect();
    let (rf, _) = dataset_features(classifier, test, &reference, device);
    let (ff, _) = dataset_features(classifier, test, &floor_idx, device);
    let reference_stats = FeatureStats::from_features(&rf, dim);
    let fd = frechet_distance(&FeatureStats::from_features(&feats, dim), &reference_stats);
    let fd_floor = frechet_distance(&FeatureStats::from_features(&ff, dim), &reference_stats);
    let total_hits: usize = hits.iter().map(|h| h.0).sum();
    let report = TeacherEval {
        samples: n,
        sampler: sampler.kind.name().to_string(),
        steps: sampler.steps,
        guidance,
        seed,
        class_agreement: total_hits as f64 / n.max(1) as f64,
        per_class_agreement: hits
            .iter()
            .enumerate()
            .map(|(c, (h, t))| (CLASSES[c].to_string(), *h as f64 / (*t).max(1) as f64))
            .collect(),
        fd,
        fd_floor,
        reference_images: reference.len(),
        wall_time_s: start.elapsed().as_secs_f64(),
    };
    let grid = Tensor::cat(grid.into_iter().flatten().collect(), 0);
    Ok((report, grid))
}

/// Scores of a conditional model at one step count.
#[derive(Debug, Clone, Serialize)]
pub struct TaskScores {
    pub steps: usize,
    /// Mean per-image PSNR (dB) and SSIM against the ground truth.
    pub psnr: f64,
    pub ssim: f64,
    /// FD (classifier features) of the outputs to the ground-truth images of the same pairs (when a
    /// classifier was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskEval {
    pub task: String,
    pub pairs: usize,
    pub guidance: f64,
    pub seed: u64,
    pub scores: Vec<TaskScores>,
    /// Super-resolution: the bicubic upsampling of the degraded input, scored the same way.
    pub bicubic: Option<TaskScores>,
    pub wall_time_s: f64,
}

fn score<B: Backend>(
    fd: Option<(&Classifier<B>, &FeatureStats)>,
    outputs: &[Vec<f32>],
    targets: &[Vec<f32>],
    size: usize,
    steps: usize,
    device: &B::Device,
) -> TaskScores {
    let n = outputs.len().max(1) as f64;
    let psnr = outputs
        .iter()
        .zip(targets)
        .map(|(o, t)| codi_core::metrics::psnr(o, t, 1.0))
        .sum::<f64>()
        / n;
    let ssim = outputs
        .iter()
        .zip(targets)
        .map(|(o, t)| codi_core::metrics::ssim(o, t, 3, size, size, 1.0))
        .sum::<f64>()
        / n;
    TaskScores {
        steps,
        psnr,
        ssim,
        fd: fd.map(|(classifier, target_stats)| {
            frechet_distance(
                &image_stats(classifier, outputs, size, device),
                target_stats,
            )
        }),
    }
}

/// The conditional model's outputs for `pairs`, in batches of `batch`, from noise seeded by `seed` (the same
/// draws for every sampler). → one 3 × size × size image in [0, 1] per pair, and each batch's wall time
pub fn sample_pairs<B: Backend>(
    pipe: &codi_pipelines::ConditionalPipeline<B>,
    pairs: &[crate::tasks::TaskPair],
    sampler: &Sampler,
    guidance: f64,
    seed: u64,
    batch: usize,
    device: &B::Device,
) -> Result<Sampled, TrainError> {
    let cc = pipe.info.condition_channels;
    let mut noise = SeededNoise::new(seed);
    let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(pairs.len());
    let mut batch_seconds = Vec::new();
    for chunk in pairs.chunks(batch.max(1)) {
        let start = std::time::Instant::now();
        let (cond, _) = crate::distill::data::pairs_tensors::<B>(chunk, cc, device);
        let texts: Vec<&str> = chunk.iter().map(|p| p.text.as_str()).collect();
        let img = pipe.generate(
            cond,
            &texts,
            sampler,
            guidance,
            &mut noise,
            device,
            |_, _| {},
        )?;
        let per = img.dims()[1] * img.dims()[2] * img.dims()[3];
        let v = codi_core::tensor_ops::to_vec(img);
        outputs.extend(v.chunks(per).map(|c| c.to_vec()));
        batch_seconds.push((chunk.len(), start.elapsed().as_secs_f64()));
    }
    Ok(Sampled {
        images: outputs,
        batch_seconds,
    })
}

/// What [`sample_pairs`] made.
pub struct Sampled {
    pub images: Vec<Vec<f32>>,
    /// (images, seconds) per batch, the images read back included.
    pub batch_seconds: Vec<(usize, f64)>,
}

impl Sampled {
    /// The median wall time of the batches of `batch` images (the last, smaller one when there is no full
    /// one), per image, in milliseconds.
    pub fn median_ms_per_image(&self, batch: usize) -> Option<f64> {
        let full: Vec<&(usize, f64)> = self.batch_seconds.iter().filter(|b| b.0 == batch).collect();
        let pool = if full.is_empty() {
            self.batch_seconds.iter().collect()
        } else {
            full
        };
        let mut per: Vec<f64> = pool
            .iter()
            .map(|(n, s)| s * 1e3 / (*n).max(1) as f64)
            .collect();
        per.sort_by(f64::total_cmp);
        per.get(per.len() / 2).copied()
    }
}

/// The condition of a pair as an RGB image for a grid: fewer than three channels (a depth map, a custom task's
/// grey image) show the first one as grey.
pub fn condition_as_rgb(pair: &crate::tasks::TaskPair, condition_channels: usize) -> Vec<f32> {
    let plane = pair.size * pair.size;
    if condition_channels < 3 {
        pair.condition[..plane].repeat(3)
    } else {
        pair.condition[..3 * plane].to_vec()
    }
}

/// Samples `pairs` at each step count with the CoDi sampler (or `sampler_kind`) and scores them (FD only with a
/// classifier). → (report, grid rows: condition shown as RGB, one
/// sample per step count, ground truth — for the first `grid_rows` pairs)
#[allow(clippy::too_many_arguments)]
pub fn evaluate_task<B: Backend>(
    pipe: &codi_pipelines::ConditionalPipeline<B>,
    classifier: Option<&Classifier<B>>,
    pairs: &[crate::tasks::TaskPair],
    step_counts: &[usize],
    sampler_kind: Option<codi_core::SamplerKind>,
    guidance: f64,
    seed: u64,
    batch: usize,
    grid_rows: usize,
    device: &B::Device,
) -> Result<(TaskEval, Tensor<B, 4>), TrainError> {
    let start = std::time::Instant::now();
    let task = pipe.info.task.clone();
    let cc = pipe.info.condition_channels;
    let size = pairs.first().map_or(32, |p| p.size);
    let targets: Vec<Vec<f32>> = pairs.iter().map(|p| p.target.clone()).collect();
    let target_stats = classifier.map(|c| image_stats(c, &targets, size, device));
    let fd = classifier.zip(target_stats.as_ref());
    let shown = |p: &crate::tasks::TaskPair| condition_as_rgb(p, cc);
    let mut scores = Vec::new();
    let mut grid_cols: Vec<Vec<Vec<f32>>> = Vec::new();
    for &steps in step_counts {
        let sampler = match sampler_kind {
            Some(kind) => codi_core::Sampler::new(kind, steps),
            None => pipe.codi_sampler(steps),
        };
        let outputs = sample_pairs(pipe, pairs, &sampler, guidance, seed, batch, device)?.images;
        println!(
            "[eval] {} steps: {} pairs ({:.0} s)",
            steps,
            outputs.len(),
            start.elapsed().as_secs_f64()
        );
        scores.push(score(fd, &outputs, &targets, size, steps, device));
        grid_cols.push(outputs.into_iter().take(grid_rows).collect());
    }
    let bicubic = (task == crate::tasks::TaskKind::SuperResolution.name()).then(|| {
        let outs: Vec<Vec<f32>> = pairs.iter().map(|p| p.condition.clone()).collect();
        score(fd, &outs, &targets, size, 0, device)
    });
    let mut rows = Vec::new();
    for (i, p) in pairs.iter().take(grid_rows).enumerate() {
        rows.extend(shown(p));
        for col in &grid_cols {
            rows.extend(col[i].iter().copied());
        }
        rows.extend(p.target.iter().copied());
    }
    let per_row = step_counts.len() + 2;
    let n_rows = pairs.len().min(grid_rows);
    let grid = Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(rows, [n_rows * per_row, 3, size, size]),
        device,
    );
    Ok((
        TaskEval {
            task,
            pairs: pairs.len(),
            guidance,
            seed,
            scores,
            bicubic,
            wall_time_s: start.elapsed().as_secs_f64(),
        },
        grid,
    ))
}
