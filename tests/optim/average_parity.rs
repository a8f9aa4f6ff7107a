//! `WeightAverage` against torch's `AveragedModel`: the averages after each of 30 updates, from
//! tests/data/weight_average_golden.safetensors (float64) and
//! tests/data/weight_average_golden_f32.safetensors (float32), which
//! `scripts/golden_weight_average.py` wrote.

use std::collections::BTreeMap;

use rewind::autograd::io::TensorFile;
use rewind::autograd::{Float, Param, Tensor};
use rewind::optim::{AverageError, WeightAverage};

use crate::support::golden::{load, row, tensor};

const STEPS: usize = 30;

fn golden<F: Float>(name: &str) -> TensorFile<F> {
    load(name, "golden_weight_average.py")
}

/// The golden file's cases, by name, as averages.
fn cases<F: Float>() -> Vec<(&'static str, WeightAverage<F>)> {
    vec![
        ("ema_0.9", WeightAverage::ema(0.9)),
        ("ema_0.999", WeightAverage::ema(0.999)),
        ("ema_0.3", WeightAverage::ema(0.3)),
        ("equal", WeightAverage::equal()),
    ]
}

fn model<F: Float>(g: &TensorFile<F>) -> Vec<Param<F>> {
    ["weight", "bias"]
        .map(|name| Param::named(name, row(&tensor(g, &format!("steps.{name}")), 0)))
        .into()
}

/// The largest distance, relative to the largest element of its tensor, of any average after
/// any update from torch's.
fn largest_distance<F: Float>(file: &str) -> f64 {
    let g = golden::<F>(file);
    let mut worst = 0.0f64;
    for (case, mut average) in cases::<F>() {
        let model = model(&g);
        for t in 0..STEPS {
            for p in &model {
                let name = p.name().unwrap();
                p.set(row(&tensor(&g, &format!("steps.{name}")), t));
            }
            average.update(&model);
            for p in &model {
                let name = p.name().unwrap();
                let want = row(&tensor(&g, &format!("{case}.{name}")), t);
                let got = average.get(name).unwrap();
                let scale = want
                    .data()
                    .iter()
                    .fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
                for (a, b) in got.data().iter().zip(want.data()) {
                    let d = (a.to_f64() - b.to_f64()).abs() / scale;
                    assert!(
                        d <= 1e-6,
                        "{case}, update {t}, {name}: {} against torch's {}",
                        a.to_f64(),
                        b.to_f64()
                    );
                    worst = worst.max(d);
                }
            }
        }
        assert_eq!(average.count(), STEPS as u64);
    }
    worst
}

#[test]
fn weight_averages_match_torch_averaged_model_f64_and_f32() {
    assert_eq!(
        largest_distance::<f64>("weight_average_golden.safetensors"),
        0.0
    );
    assert_eq!(
        largest_distance::<f32>("weight_average_golden_f32.safetensors"),
        0.0
    );
}

#[test]
fn copy_to_sets_the_model_to_its_average() {
    let model = vec![Param::named(
        "w",
        Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2]).unwrap(),
    )];
    let mut average = WeightAverage::equal();
    average.update(&model);
    model[0].set(Tensor::from_vec(vec![3.0, 6.0], &[2]).unwrap());
    average.update(&model);
    average.copy_to(&model);
    assert_eq!(model[0].value().data(), &[2.0, 4.0]);
}

#[test]
#[should_panic(expected = "the model's parameters [w [3]] are not the averaged ones [w [2]]")]
fn another_model_is_refused_by_name_and_shape() {
    let mut average = WeightAverage::<f32>::ema(0.9);
    average.update(&vec![Param::named("w", Tensor::zeros(&[2]))]);
    average.update(&vec![Param::named("w", Tensor::zeros(&[3]))]);
}

#[test]
#[should_panic(expected = "the decay must lie in [0, 1], got 1.5")]
fn a_decay_above_one_is_refused() {
    WeightAverage::<f32>::ema(1.5);
}

#[test]
fn restore_resumes_exactly_and_refuses_what_does_not_fit() {
    let model = vec![
        Param::named("w", Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2]).unwrap()),
        Param::named("b", Tensor::scalar(0.5)),
    ];
    let mut whole = WeightAverage::ema(0.9);
    whole.update(&model);
    let mut resumed = WeightAverage::ema(0.9);
    resumed
        .restore(&model, whole.count(), whole.weights().clone())
        .unwrap();
    for average in [&mut whole, &mut resumed] {
        model[0].set(Tensor::from_vec(vec![3.0, -1.0], &[2]).unwrap());
        average.update(&model);
    }
    assert_eq!(whole.weights(), resumed.weights());
    assert_eq!(resumed.count(), 2);

    let with = |entries: &[(&str, Tensor<f32>)]| -> BTreeMap<String, Tensor<f32>> {
        entries
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    };
    let w = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    let b = Tensor::scalar(0.5);
    let mut fresh = WeightAverage::ema(0.9);
    assert_eq!(
        fresh.restore(&model, 1, with(&[("w", w.clone())])),
        Err(AverageError::Missing("b".into()))
    );
    assert_eq!(
        fresh.restore(
            &model,
            1,
            with(&[("w", w.clone()), ("b", b.clone()), ("c", b.clone())])
        ),
        Err(AverageError::Unexpected("c".into()))
    );
    assert_eq!(
        fresh.restore(&model, 1, with(&[("w", b.clone()), ("b", b.clone())])),
        Err(AverageError::Shape {
            name: "w".into(),
            expected: vec![2],
            found: vec![],
        })
    );
    let nan = Tensor::from_vec(vec![f32::NAN, 2.0], &[2]).unwrap();
    assert_eq!(
        fresh.restore(&model, 1, with(&[("w", nan), ("b", b.clone())])),
        Err(AverageError::NotFinite("w".into()))
    );
    assert_eq!(
        fresh.restore(&model, 0, with(&[("w", w), ("b", b)])),
        Err(AverageError::Unexpected("b".into()))
    );
    assert_eq!(fresh.count(), 0, "a refused restore changes nothing");
}
