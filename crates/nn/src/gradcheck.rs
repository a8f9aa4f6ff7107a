//! `gradcheck_module`: finite differences against backward for a model's parameters.

use rewind_autograd::{GradcheckError, GradcheckOptions, Tape, Var};

use crate::module::Module;

/// Checks ∂L/∂θ from backward against central differences for every parameter θ of `model`, in
/// f64, with torch.autograd.gradcheck's tolerances (ε 1e-6, atol 1e-5, rtol 1e-3). `loss` builds
/// a scalar from the model on a fresh tape and must be deterministic.
///
/// The error's `input` is the parameter's position in `model.params()`.
pub fn gradcheck_module<M, L>(model: &mut M, loss: L) -> Result<(), GradcheckError>
where
    M: Module<f64>,
    L: for<'t> Fn(&'t Tape<f64>, &M) -> Var<'t, f64>,
{
    let options = GradcheckOptions::default();
    let analytical: Vec<Vec<f64>> = {
        let tape = Tape::new();
        let grads = loss(&tape, model).backward();
        model
            .params()
            .iter()
            .map(|(_, p)| {
                grads
                    .get(p)
                    .map_or_else(|| vec![0.0; p.value().numel()], |g| g.data().to_vec())
            })
            .collect()
    };
    let evaluate = |model: &M| loss(&Tape::new(), model).item();
    for (j, expected) in analytical.iter().enumerate() {
        for e in 0..expected.len() {
            let x = model.params()[j].1.value().data()[e];
            set_element(model, j, e, x + options.eps);
            let plus = evaluate(model);
            set_element(model, j, e, x - options.eps);
            let minus = evaluate(model);
            set_element(model, j, e, x);
            let numerical = (plus - minus) / (2.0 * options.eps);
            let a = expected[e];
            if !options.agrees(a, numerical) {
                let shape = model.params()[j].1.shape().to_vec();
                return Err(GradcheckError {
                    input: j,
                    element: unflatten(e, &shape),
                    output: 0,
                    analytical: a,
                    numerical,
                    options,
                });
            }
        }
    }
    Ok(())
}

fn set_element<M: Module<f64>>(model: &M, param: usize, element: usize, value: f64) {
    model.params()[param]
        .1
        .update(|t| t.data_mut()[element] = value);
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}
