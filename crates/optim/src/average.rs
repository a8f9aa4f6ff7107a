//! A running average of a model's weights, to evaluate with: torch's
//! `torch.optim.swa_utils.AveragedModel`.

use std::collections::BTreeMap;
use std::fmt;

use rewind_autograd::{Float, Tensor};
use rewind_nn::Module;

use crate::fused::Lerp;

/// A running average of a model's weights, kept beside the model as
/// `torch.optim.swa_utils.AveragedModel` keeps it: [`update`](WeightAverage::update) after each
/// optimizer step, then evaluate with the average ([`copy_to`](WeightAverage::copy_to) a second
/// model built like the first) while training goes on with the weights the optimizer steps.
///
/// The first update copies the weights; update n + 1 (n ≥ 1 updates before it) then sets each
/// average ā from the weights θ:
///
/// ```text
/// exponential, decay d:   ā ← lerp(ā, θ, 1 - d)     (get_ema_multi_avg_fn(d))
/// equal:                  ā ← ā + (θ - ā) / (n + 1)  (AveragedModel's default, SWA)
/// ```
///
/// rounded as torch's CPU loops round them: the lerp as [`torch.lerp`] with its weight 1 - d
/// rounded to `F` once; the equal step's difference, quotient and sum each rounded.
///
/// The exponential average smooths the noise of the last ~1/(1 - d) steps out of the weights: a
/// model trained with a small batch and evaluated with the average usually scores lower than
/// the same model's own weights, for one copy of the weights and one pass over them per step.
///
/// ```
/// use rewind_autograd::{Param, Tensor};
/// use rewind_optim::WeightAverage;
///
/// let model = vec![Param::named("w", Tensor::<f32>::scalar(1.0))];
/// let mut average = WeightAverage::ema(0.5);
/// average.update(&model); // copies: 1
/// model[0].set(Tensor::scalar(3.0));
/// average.update(&model); // 1 + 0.5·(3 - 1)
/// assert_eq!(average.get("w").unwrap().item(), 2.0);
/// ```
///
/// [`torch.lerp`]: https://pytorch.org/docs/stable/generated/torch.lerp.html
#[derive(Clone, Debug)]
pub struct WeightAverage<F: Float = f32> {
    rule: Averaging,
    count: u64,
    weights: BTreeMap<String, Tensor<F>>,
}

/// How the average weighs the steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Averaging {
    /// Exponential, with this decay: the last update's weights count 1 - decay.
    Exponential(f64),
    /// Every update's weights count the same.
    Equal,
}

impl<F: Float> WeightAverage<F> {
    /// An exponential moving average with decay `decay` (torch's default is 0.999). Panics, at
    /// the caller's line, unless 0 ≤ decay ≤ 1, as torch refuses.
    #[track_caller]
    pub fn ema(decay: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&decay),
            "WeightAverage: the decay must lie in [0, 1], got {decay}"
        );
        Self::with_rule(Averaging::Exponential(decay))
    }

    /// The equal average of every update's weights (stochastic weight averaging).
    pub fn equal() -> Self {
        Self::with_rule(Averaging::Equal)
    }

    fn with_rule(rule: Averaging) -> Self {
        WeightAverage {
            rule,
            count: 0,
            weights: BTreeMap::new(),
        }
    }

    /// How the average weighs the steps.
    pub fn rule(&self) -> Averaging {
        self.rule
    }

    /// The updates made (torch's `n_averaged`).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The average of the parameter named `name`, once updated.
    pub fn get(&self, name: &str) -> Option<&Tensor<F>> {
        self.weights.get(name)
    }

    /// Every parameter's average, by name.
    pub fn weights(&self) -> &BTreeMap<String, Tensor<F>> {
        &self.weights
    }

    /// Takes `model`'s weights into the average: copies them the first time.
    ///
    /// Panics, at the caller's line, when `model` lists other parameters (names or shapes) than
    /// at the first update: the average belongs to one model.
    #[track_caller]
    pub fn update(&mut self, model: &dyn Module<F>) {
        let params = model.params();
        if self.count == 0 {
            self.weights = params
                .iter()
                .map(|(name, p)| (name.clone(), p.value()))
                .collect();
            self.count = 1;
            return;
        }
        self.check_same(&params);
        let n = self.count as f64;
        for (name, param) in &params {
            let average = self.weights.get_mut(name).expect("checked");
            let theta = param.value();
            let (a, t) = (average.data_mut(), theta.data());
            match self.rule {
                Averaging::Exponential(decay) => {
                    let lerp = Lerp::new(F::from_f64(1.0 - decay));
                    for (a, &t) in a.iter_mut().zip(t) {
                        *a = lerp.at(*a, t);
                    }
                }
                Averaging::Equal => {
                    let divisor = F::from_f64(n + 1.0);
                    for (a, &t) in a.iter_mut().zip(t) {
                        *a = *a + (t - *a) / divisor;
                    }
                }
            }
        }
        self.count += 1;
    }

    /// Sets each of `model`'s parameters to its average, to evaluate (or save) the averaged
    /// model. Panics, at the caller's line, before the first update, and when `model` lists other
    /// parameters (names or shapes) than the average holds.
    #[track_caller]
    pub fn copy_to(&self, model: &dyn Module<F>) {
        assert!(
            self.count > 0,
            "WeightAverage::copy_to: nothing averaged yet (call update after each step first)"
        );
        let params = model.params();
        self.check_same(&params);
        for (name, param) in params {
            param.set(self.weights[&name].clone());
        }
    }

    /// Restores an average saved from [`count`](WeightAverage::count) and
    /// [`weights`](WeightAverage::weights), for `model`: fails, changing nothing, when a
    /// parameter of `model` has no average or one of another shape, when an average has no
    /// parameter, when one holds a NaN or an infinity, or when the count is 0 but weights are
    /// given (or the reverse).
    pub fn restore(
        &mut self,
        model: &dyn Module<F>,
        count: u64,
        weights: BTreeMap<String, Tensor<F>>,
    ) -> Result<(), AverageError> {
        if count == 0 {
            return match weights.keys().next() {
                None => {
                    self.count = 0;
                    self.weights.clear();
                    Ok(())
                }
                Some(name) => Err(AverageError::Unexpected(name.clone())),
            };
        }
        let params = model.params();
        for (name, param) in &params {
            let average = weights
                .get(name)
                .ok_or_else(|| AverageError::Missing(name.clone()))?;
            if average.shape() != &param.shape()[..] {
                return Err(AverageError::Shape {
                    name: name.clone(),
                    expected: param.shape().to_vec(),
                    found: average.shape().to_vec(),
                });
            }
            if average.data().iter().any(|v| !v.is_finite()) {
                return Err(AverageError::NotFinite(name.clone()));
            }
        }
        if let Some(extra) = weights
            .keys()
            .find(|k| !params.iter().any(|(n, _)| n == *k))
        {
            return Err(AverageError::Unexpected(extra.clone()));
        }
        self.count = count;
        self.weights = weights;
        Ok(())
    }

    #[track_caller]
    fn check_same(&self, params: &[(String, &rewind_autograd::Param<F>)]) {
        let same = params.len() == self.weights.len()
            && params.iter().all(|(name, p)| {
                self.weights
                    .get(name)
                    .is_some_and(|a| a.shape() == &p.shape()[..])
            });
        if !same {
            let listed = |it: Vec<String>| it.join(", ");
            panic!(
                "WeightAverage: the model's parameters [{}] are not the averaged ones [{}]",
                listed(
                    params
                        .iter()
                        .map(|(n, p)| format!("{n} {:?}", &p.shape()[..]))
                        .collect()
                ),
                listed(
                    self.weights
                        .iter()
                        .map(|(n, a)| format!("{n} {:?}", a.shape()))
                        .collect()
                ),
            );
        }
    }
}

/// Why [`WeightAverage::restore`] refused a saved average.
#[derive(Clone, Debug, PartialEq)]
pub enum AverageError {
    /// A parameter of the model has no average.
    Missing(String),
    /// An average names no parameter of the model (or weights came with a count of 0).
    Unexpected(String),
    /// An average's shape is not its parameter's.
    Shape {
        /// The parameter.
        name: String,
        /// Its shape.
        expected: Vec<usize>,
        /// The average's shape.
        found: Vec<usize>,
    },
    /// An average holds a NaN or an infinity: the run it was saved from had diverged.
    NotFinite(String),
}

impl fmt::Display for AverageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AverageError::Missing(name) => write!(f, "weight average lacks `{name}`"),
            AverageError::Unexpected(name) => {
                write!(
                    f,
                    "weight average holds `{name}`, which the model has no parameter for"
                )
            }
            AverageError::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "weight average: `{name}` has shape {found:?}, expected {expected:?}"
            ),
            AverageError::NotFinite(name) => {
                write!(f, "weight average: `{name}` holds a NaN or an infinity")
            }
        }
    }
}

impl std::error::Error for AverageError {}
