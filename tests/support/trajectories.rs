//! Optimizer trajectories against PyTorch's: a golden file holds a small model's start
//! (`params.*`), the gradients it is given at each step (`grads.*`, [T, ...]) and, per
//! configuration, torch's weights after each step (`{config}.{param}`, [T, ...]).

use rewind::autograd::io::TensorFile;
use rewind::autograd::{Float, Grads, Param, Tape, Tensor};
use rewind::optim::{OptimState, Optimizer};

use super::golden::{row, tensor};

/// The steps of every golden trajectory.
pub const STEPS: usize = 100;

/// Named optimizer configurations, as a golden script's CONFIGS names them.
pub type Configs<F> = Vec<(&'static str, Box<dyn Optimizer<F>>)>;

/// The golden model at its start: a weight and a bias.
pub fn model<F: Float>(g: &TensorFile<F>) -> Vec<Param<F>> {
    vec![
        Param::named("weight", tensor(g, "params.weight")),
        Param::named("bias", tensor(g, "params.bias")),
    ]
}

/// Gradients equal to the golden ones at step `t`: the gradient of Σ p ⊙ G with respect to p is G.
pub fn grads_at<F: Float>(g: &TensorFile<F>, model: &[Param<F>], t: usize) -> Grads<F> {
    let tape = Tape::new();
    let mut loss = tape.constant(Tensor::scalar(F::ZERO));
    for p in model {
        let gt = row(&tensor(g, &format!("grads.{}", p.name().unwrap())), t);
        loss = loss + (tape.param(p) * tape.constant(gt)).sum();
    }
    loss.backward()
}

/// The largest error of `actual`'s elements relative to `expected`'s.
pub fn max_rel_error<F: Float>(actual: &[F], expected: &[F]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a.to_f64() - e.to_f64()).abs() / e.to_f64().abs().max(1e-12))
        .fold(0.0, f64::max)
}

/// How far a run is from torch's, over every parameter and step: the largest error of one
/// element relative to that element (`elementwise`), and relative to the largest element of its
/// tensor at that step (`normwise`, ‖a - e‖∞ / ‖e‖∞). The first blows up where a weight passes
/// near zero; the second does not.
#[derive(Clone, Copy, Debug, Default)]
pub struct Distance {
    pub elementwise: f64,
    pub normwise: f64,
}

impl Distance {
    fn of<F: Float>(actual: &[F], expected: &[F]) -> Self {
        let largest = expected.iter().fold(0.0, |m, e| e.to_f64().abs().max(m));
        let worst_abs = actual
            .iter()
            .zip(expected)
            .fold(0.0, |m, (a, e)| (a.to_f64() - e.to_f64()).abs().max(m));
        Distance {
            elementwise: max_rel_error(actual, expected),
            normwise: worst_abs / largest,
        }
    }

    fn max(self, other: Self) -> Self {
        Distance {
            elementwise: self.elementwise.max(other.elementwise),
            normwise: self.normwise.max(other.normwise),
        }
    }
}

/// Runs every configuration for [`STEPS`] steps on the golden start and gradients of `g`, and
/// returns, per configuration, its distance from torch's trajectory.
pub fn trajectory_distances<F: Float>(
    g: &TensorFile<F>,
    configs: Configs<F>,
) -> Vec<(&'static str, Distance)> {
    configs
        .into_iter()
        .map(|(name, mut opt)| {
            let mut m = model(g);
            let mut worst = Distance::default();
            for t in 0..STEPS {
                let grads = grads_at(g, &m, t);
                opt.step(&mut m, &grads);
                for p in &m {
                    let expected = row(&tensor(g, &format!("{name}.{}", p.name().unwrap())), t);
                    worst = worst.max(Distance::of(p.value().data(), expected.data()));
                }
            }
            (name, worst)
        })
        .collect()
}

/// Prints every configuration's distance, then checks the chosen measure of each against
/// `tolerance`; `label` names the run (a dtype, a file) in both.
pub fn assert_within(
    distances: &[(&str, Distance)],
    label: &str,
    measure: fn(&Distance) -> f64,
    tolerance: f64,
) {
    let report: Vec<String> = distances
        .iter()
        .map(|(name, d)| format!("{name:<28} {:>9.2e} {:>9.2e}", d.elementwise, d.normwise))
        .collect();
    println!(
        "{label} optimizer parity over {STEPS} steps, largest relative error\n{:<28} {:>9} {:>9}\n{}",
        "",
        "element",
        "normwise",
        report.join("\n")
    );
    for (name, d) in distances {
        let worst = measure(d);
        assert!(
            worst <= tolerance,
            "{name} in {label}: relative error {worst:e} exceeds {tolerance:e}"
        );
    }
}

/// Runs every configuration of `configs` for [`STEPS`] steps on `g`, straight through and again
/// saved after step ten (to a file under a scratch directory named `scratch`), loaded into a fresh
/// optimizer whose learning rate was set elsewhere, and continued; the two runs must end with the
/// same weights to the bit.
pub fn assert_resuming_at_step_ten_equals_an_uninterrupted_run(
    g: &TensorFile<f64>,
    configs: fn() -> Configs<f64>,
    scratch: &str,
) {
    let dir = std::env::temp_dir().join(format!("{scratch}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for ((name, mut whole), (_, mut first_part)) in configs().into_iter().zip(configs()) {
        let mut straight = model(g);
        for t in 0..STEPS {
            let grads = grads_at(g, &straight, t);
            whole.step(&mut straight, &grads);
        }
        let mut resumed = model(g);
        for t in 0..10 {
            let grads = grads_at(g, &resumed, t);
            first_part.step(&mut resumed, &grads);
        }
        let file = dir.join(format!("{name}.safetensors"));
        first_part.state().save(&file).unwrap();
        let (_, mut rest) = configs().into_iter().find(|(n, _)| *n == name).unwrap();
        rest.set_lr(123.0); // the saved state must restore it
        rest.load_state(&OptimState::load(&file).unwrap()).unwrap();
        for t in 10..STEPS {
            let grads = grads_at(g, &resumed, t);
            rest.step(&mut resumed, &grads);
        }
        for (a, b) in straight.iter().zip(&resumed) {
            assert_eq!(
                a.value().data(),
                b.value().data(),
                "{name}: resumed run differs"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
