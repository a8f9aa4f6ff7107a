//! `Tape::checkpoint`: run a function without keeping its insides, and run it again on a fresh
//! tape during backward to recompute what its gradients need.

use smallvec::SmallVec;

use crate::float::Float;
use crate::primitives::{Op, Segment};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl<F: Float> Tape<F> {
    /// Runs `f` on `inputs` without keeping anything it computes inside, only its outputs; during
    /// backward, `f` runs again on a fresh tape to recompute what its gradients need (as
    /// `jax.checkpoint` and `torch.utils.checkpoint`). Memory for a chain of such segments is
    /// their outputs plus one segment's insides at a time.
    ///
    /// `f` must be a pure function of its inputs: pass parameters in as inputs
    /// (`tape.param(&p)`), and derive any randomness from values it captures (a seed), so the
    /// recomputation replays it exactly.
    ///
    /// ```
    /// use rewind_autograd::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(0.5));
    /// let y = tape.checkpoint(&[x], |_, v| vec![(v[0] * v[0]).tanh()])[0];
    /// let g = y.backward()[x].item(); // d tanh(x²)/dx = 2x (1 - tanh²(x²))
    /// assert!((g - (1.0 - 0.25f64.tanh().powi(2))).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn checkpoint<'t>(
        &'t self,
        inputs: &[Var<'t, F>],
        f: impl for<'s> Fn(&'s Tape<F>, &[Var<'s, F>]) -> Vec<Var<'s, F>> + 'static,
    ) -> Vec<Var<'t, F>> {
        for v in inputs {
            self.assert_owns("checkpoint", *v);
        }
        let indices: SmallVec<[usize; 4]> = inputs.iter().map(|v| v.index()).collect();
        let op = Op::Checkpoint {
            f: Box::new(OnInnerTape {
                f,
                anomaly: self.detects_anomaly(),
            }),
            inputs: indices.clone(),
            shapes: Vec::new(),
            outputs: Vec::new(),
        };
        self.record_checkpoint(op, &indices)
    }
}

/// A checkpointed function of Vars, run on inner tapes that take on the outer tape's anomaly mode
/// as it was when the checkpoint was recorded.
struct OnInnerTape<G> {
    f: G,
    anomaly: bool,
}

impl<F: Float, G> Segment<F> for OnInnerTape<G>
where
    G: for<'s> Fn(&'s Tape<F>, &[Var<'s, F>]) -> Vec<Var<'s, F>> + 'static,
{
    fn run(&self, inputs: &[&Tensor<F>]) -> Vec<Tensor<F>> {
        let inner = Tape::new();
        inner.detect_anomaly(self.anomaly);
        let vars: Vec<Var<'_, F>> = inputs.iter().map(|&v| inner.constant(v.clone())).collect();
        (self.f)(&inner, &vars).iter().map(|o| o.value()).collect()
    }

    fn rerun(
        &self,
        inputs: &[(&Tensor<F>, bool)],
        g: Vec<Tensor<F>>,
    ) -> (Vec<Option<Tensor<F>>>, usize) {
        let inner = Tape::new();
        inner.detect_anomaly(self.anomaly);
        let vars: Vec<Var<'_, F>> = inputs
            .iter()
            .map(|&(v, needs_grad)| match needs_grad {
                true => inner.var(v.clone()),
                false => inner.constant(v.clone()),
            })
            .collect();
        let outputs = (self.f)(&inner, &vars);
        let mut total = inner.constant(Tensor::scalar(F::ZERO));
        for (o, gk) in outputs.iter().zip(g) {
            total = total + (*o * inner.constant(gk)).sum();
        }
        let bytes = inner.stats().bytes;
        let grads = total.backward();
        (vars.iter().map(|&v| grads.wrt(v).cloned()).collect(), bytes)
    }
}
