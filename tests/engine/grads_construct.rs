//! `Grads` built by hand, from tensors named as the model names its parameters or keyed by the
//! parameter itself: what an optimizer needs to apply gradients that did not come from this
//! process's backward pass. (The PyTorch parity of an optimizer fed such gradients is in
//! nn_more_parity.rs.)

use std::collections::BTreeMap;

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{GradProblem, Grads, Param, Tape, Tensor};
use rewind::nn::{Linear, Module};
use rewind::optim::{Optimizer, Sgd};

fn layer() -> Linear<f64> {
    Linear::init(3, 2, &mut StdRng::seed_from_u64(0))
}

fn filled(shape: &[usize], v: f64) -> Tensor<f64> {
    Tensor::full(shape, v)
}

/// Gradients by name equal those of a backward pass, and an optimizer step with either is the
/// same step.
#[test]
fn gradients_by_name_step_like_a_backward_pass() {
    let (mut a, mut b) = (layer(), layer());
    let tape = Tape::new();
    let x = tape.constant(Tensor::from_vec(vec![1.0, -2.0, 0.5], &[1, 3]).unwrap());
    let from_backward = a.forward(&tape, x).powf(2.0).sum().backward();

    let named = from_backward.named(a.params());
    assert_eq!(
        named.keys().collect::<Vec<_>>(),
        ["bias", "weight"],
        "every parameter's gradient, by its name"
    );
    let by_name = Grads::from_named(b.params(), named).unwrap();
    assert_eq!(by_name.len(), 2);
    assert_eq!(by_name[&b.weight], from_backward[&a.weight]);

    Sgd::new(0.1).step(&mut a, &from_backward);
    Sgd::new(0.1).step(&mut b, &by_name);
    assert_eq!(a.weight.value(), b.weight.value());
    assert_eq!(
        a.bias.as_ref().unwrap().value(),
        b.bias.as_ref().unwrap().value()
    );
}

/// A parameter given no gradient keeps its value, as a PyTorch parameter whose grad is None.
#[test]
fn a_parameter_without_a_gradient_is_left_alone() {
    let mut model = layer();
    let bias_before = model.bias.as_ref().unwrap().value();
    let weight_before = model.weight.value();
    let grads = Grads::from_named(model.params(), [("weight", filled(&[2, 3], 1.0))]).unwrap();
    assert_eq!(grads.len(), 1);
    Sgd::new(0.5).step(&mut model, &grads);
    assert_eq!(model.bias.as_ref().unwrap().value(), bias_before);
    let moved: Vec<f64> = weight_before.data().iter().map(|w| w - 0.5).collect();
    assert_eq!(model.weight.value().data(), &moved[..]);
}

/// Every problem at once, each naming the tensor, what was expected and what was found.
#[test]
fn unknown_names_misshapen_and_repeated_tensors_are_listed() {
    let model = layer();
    let err = Grads::from_named(
        model.params(),
        [
            ("weight", filled(&[3, 2], 0.0)),
            ("wieght", filled(&[2, 3], 0.0)),
            ("bias", filled(&[2], 0.0)),
            ("bias", filled(&[2], 1.0)),
        ],
    )
    .unwrap_err();
    assert_eq!(
        err.problems,
        [
            GradProblem::Shape {
                name: "weight".into(),
                expected: vec![2, 3],
                found: vec![3, 2],
            },
            GradProblem::Unknown {
                name: "wieght".into(),
                shape: vec![2, 3],
            },
            GradProblem::Repeated {
                name: "bias".into()
            },
        ]
    );
    assert_eq!(
        err.to_string(),
        "the gradients do not fit the parameters: `weight` has shape [3, 2], the parameter is \
         [2, 3]; unknown `wieght` [2, 3] (no parameter has that name); `bias` is given twice. \
         The parameters are `weight`, `bias`"
    );
}

/// Two parameters under one name cannot be told apart by name.
#[test]
fn a_name_two_parameters_share_is_ambiguous() {
    let params = vec![
        Param::named("p", filled(&[2], 0.0)),
        Param::named("p", filled(&[2], 0.0)),
    ];
    let err = Grads::from_named(params.params(), [("p", filled(&[2], 1.0))]).unwrap_err();
    assert_eq!(
        err.problems,
        [GradProblem::Ambiguous {
            name: "p".into(),
            count: 2
        }]
    );
    assert!(
        err.to_string().contains("2 parameters are named `p`"),
        "{err}"
    );
}

/// `insert` keys a gradient by the parameter itself, checks its shape, and replaces an earlier
/// one; it also adds to the gradients a backward pass returned.
#[test]
fn insert_checks_the_shape_and_replaces() {
    let model = layer();
    let mut grads = Grads::default();
    assert!(grads.is_empty());
    grads.insert(&model.weight, filled(&[2, 3], 1.0)).unwrap();
    grads.insert(&model.weight, filled(&[2, 3], 2.0)).unwrap();
    assert_eq!(grads.len(), 1);
    assert_eq!(grads[&model.weight], filled(&[2, 3], 2.0));

    let err = grads
        .insert(model.bias.as_ref().unwrap(), filled(&[3], 0.0))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the gradients do not fit the parameters: `bias` has shape [3], the parameter is [2]"
    );
    assert_eq!(grads.len(), 1, "a refused gradient is not kept");

    let unnamed = Param::new(filled(&[4], 0.0));
    let err = grads.insert(&unnamed, filled(&[2], 0.0)).unwrap_err();
    assert!(
        err.to_string().contains("`(unnamed)` has shape [2]"),
        "{err}"
    );

    let tape = Tape::new();
    let mut from_backward = tape.param(&model.weight).sum().backward();
    from_backward
        .insert(model.bias.as_ref().unwrap(), filled(&[2], 3.0))
        .unwrap();
    assert_eq!(from_backward.len(), 2);
}

/// Gradients built by hand hold no node's gradient: asking for one is a misuse.
#[test]
#[should_panic(expected = "Grads: these gradients were built by hand, not by a backward pass")]
fn a_node_gradient_from_hand_built_grads_panics() {
    let grads: Grads<f64> =
        Grads::from_named(layer().params(), BTreeMap::<String, _>::new()).unwrap();
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(1.0));
    let _ = &grads[x];
}
