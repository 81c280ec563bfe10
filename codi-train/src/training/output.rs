//! What a training or validation step reports to burn-train: the loss and named scalar terms (a loss's parts,
//! an accuracy), each shown as its own numeric metric.

use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::{backend::Backend, Tensor, Transaction};
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, ItemLazy, LossInput, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};

/// One step's result. loss: \[1\]; terms: [number of terms] (detached scalars).
pub struct StepOutput<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub terms: Tensor<B, 1>,
    pub batch: usize,
}

impl<B: Backend> StepOutput<B> {
    /// `terms` are scalars of the step (detached here).
    pub fn new(loss: Tensor<B, 1>, terms: Vec<Tensor<B, 1>>, batch: usize) -> Self {
        let terms = if terms.is_empty() {
            loss.clone().detach()
        } else {
            Tensor::cat(terms, 0).detach()
        };
        Self { loss, terms, batch }
    }
}

impl<B: Backend> ItemLazy for StepOutput<B> {
    type ItemSync = StepOutput<Flex>;

    fn sync(self) -> StepOutput<Flex> {
        let [loss, terms] = Transaction::default()
            .register(self.loss)
            .register(self.terms)
            .execute()
            .try_into()
            .expect("two tensors");
        let device = Default::default();
        StepOutput {
            loss: Tensor::from_data(loss, &device),
            terms: Tensor::from_data(terms, &device),
            batch: self.batch,
        }
    }
}

impl Adaptor<LossInput<Flex>> for StepOutput<Flex> {
    fn adapt(&self) -> LossInput<Flex> {
        LossInput::new(self.loss.clone())
    }
}

/// The terms of a step as plain numbers.
pub struct TermsInput {
    pub values: Vec<f64>,
    pub batch: usize,
}

impl Adaptor<TermsInput> for StepOutput<Flex> {
    fn adapt(&self) -> TermsInput {
        TermsInput {
            values: self.terms.to_data().iter::<f64>().collect(),
            batch: self.batch,
        }
    }
}

/// One named term of [`StepOutput::terms`] as a numeric metric.
#[derive(Clone)]
pub struct TermMetric {
    index: usize,
    name: MetricName,
    higher_is_better: bool,
    state: NumericMetricState,
}

impl TermMetric {
    pub fn new(index: usize, name: &str, higher_is_better: bool) -> Self {
        Self {
            index,
            name: Arc::new(name.to_string()),
            higher_is_better,
            state: NumericMetricState::default(),
        }
    }
}

impl Metric for TermMetric {
    type Input = TermsInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: self.higher_is_better,
        }
        .into()
    }

    fn update(&mut self, item: &TermsInput, _metadata: &MetricMetadata) -> SerializedEntry {
        let v = item.values.get(self.index).copied().unwrap_or(f64::NAN);
        self.state.update(
            v,
            item.batch,
            FormatOptions::new(self.name.clone()).precision(4),
        )
    }

    fn clear(&mut self) {
        self.state.reset()
    }
}

impl Numeric for TermMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
