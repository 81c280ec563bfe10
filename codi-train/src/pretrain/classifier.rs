//! Classifier pretraining (cross-entropy over the joint label space) and its test accuracy per dataset.

use std::path::Path;

use burn::config::Config;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use codi_models::classifier::{Classifier, ClassifierConfig};
use serde::Serialize;

use crate::data::batch::{images_tensor, ImageBatch, ImageBatcher};
use crate::data::fashion_mnist::Split;
use crate::data::mixed::{DataConfig, Mixed, SCENE_LABEL_OFFSET};
use crate::data::ImageItem;
use crate::error::TrainError;
use crate::training::output::StepOutput;
use crate::training::{fit, train_loader, valid_loader, FitReport, RunOptions, TrainLoopConfig};

#[derive(Config, Debug)]
pub struct ClassifierPretrainConfig {
    pub model: ClassifierConfig,
    pub train: TrainLoopConfig,
    pub data: DataConfig,
    /// Random horizontal flips of training images (probability 0.5).
    #[config(default = true)]
    pub flip: bool,
}

#[derive(Module, Debug)]
pub struct ClassifierTraining<B: Backend> {
    pub classifier: Classifier<B>,
    pub flip: bool,
}

pub const TERMS: [(&str, bool); 1] = [("accuracy", true)];

impl<B: Backend> ClassifierTraining<B> {
    fn losses(&self, batch: ImageBatch<B>, augment: bool) -> StepOutput<B> {
        let mut x = batch.images;
        let n = x.dims()[0];
        if augment && self.flip {
            // Flip the first half of the batch (items arrive in random order).
            let half = n / 2;
            if half > 0 {
                let parts = x.split_with_sizes(vec![half, n - half], 0);
                x = burn::tensor::Tensor::cat(
                    vec![parts[0].clone().flip([3]), parts[1].clone()],
                    0,
                );
            }
        }
        let logits = self.classifier.forward(x);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.labels.clone());
        let acc = logits
            .argmax(1)
            .squeeze_dim::<1>(1)
            .equal(batch.labels)
            .float()
            .mean();
        StepOutput::new(loss, vec![acc], n)
    }
}

impl<B: AutodiffBackend> TrainStep for ClassifierTraining<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.losses(batch, true);
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl<B: Backend> InferenceStep for ClassifierTraining<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> StepOutput<B> {
        self.losses(batch, false)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifierReport {
    pub accuracy_fashion_mnist: Option<f64>,
    pub n_fashion_mnist: usize,
    pub accuracy_scenes: Option<f64>,
    pub n_scenes: usize,
}

/// Predicted labels of `items`. → one label per item
pub fn predict<B: Backend>(
    classifier: &Classifier<B>,
    items: &[ImageItem],
    device: &B::Device,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(256) {
        let logits = classifier.forward(images_tensor::<B>(chunk, device));
        let labels = logits.argmax(1).reshape([chunk.len()]);
        out.extend(
            labels
                .into_data()
                .convert::<i64>()
                .iter::<i64>()
                .map(|l| l as usize),
        );
    }
    out
}

/// Test accuracy per dataset.
pub fn evaluate_accuracy<B: Backend>(
    classifier: &Classifier<B>,
    data: &impl Dataset<ImageItem>,
    device: &B::Device,
) -> ClassifierReport {
    let mut hits = [(0usize, 0usize); 2];
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(1024) {
        let items: Vec<ImageItem> = chunk.iter().filter_map(|&i| data.get(i)).collect();
        let pred = predict(classifier, &items, device);
        for (item, p) in items.iter().zip(pred) {
            let k = usize::from(item.label >= SCENE_LABEL_OFFSET);
            hits[k].0 += usize::from(p == item.label);
            hits[k].1 += 1;
        }
    }
    let acc = |(h, n): (usize, usize)| (n > 0).then(|| h as f64 / n as f64);
    ClassifierReport {
        accuracy_fashion_mnist: acc(hits[0]),
        n_fashion_mnist: hits[0].1,
        accuracy_scenes: acc(hits[1]),
        n_scenes: hits[1].1,
    }
}

/// Trains the classifier, measures test accuracy and saves it (`config.json` + safetensors) to `out`.
pub fn pretrain_classifier<B: AutodiffBackend>(
    config: &ClassifierPretrainConfig,
    fashion_dir: &Path,
    run: &RunOptions,
    out: &Path,
    device: &B::Device,
) -> Result<(ClassifierReport, FitReport), TrainError> {
    crate::training::checks::Checked::check(config).map_err(TrainError::Config)?;
    B::seed(device, config.train.seed);
    let train = Mixed::load(&config.data, fashion_dir, Split::Train)?;
    let test = Mixed::load(&config.data, fashion_dir, Split::Test)?;
    let model = ClassifierTraining {
        classifier: config.model.init::<B>(device),
        flip: config.flip,
    };
    let (trained, fit_report) = fit(
        "classifier",
        model,
        &config.train,
        None,
        train_loader::<B, _, _, _, _>(ImageBatcher, train, &config.train, run, None, device),
        valid_loader::<B::InnerBackend, _, _, _, _>(
            ImageBatcher,
            test.clone(),
            &config.train,
            device,
        ),
        &TERMS,
        run,
    )?;
    let report = evaluate_accuracy(&trained.classifier, &test, device);
    codi_models::io::save_dir(
        &trained.classifier,
        &config.model.to_json(),
        out,
        "model.safetensors",
    )?;
    Ok((report, fit_report))
}
