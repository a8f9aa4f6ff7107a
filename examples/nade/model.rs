//! The three densities over binary vectors x ∈ {0,1}^D in raster order: independent Bernoulli,
//! FVSBN and NADE, each giving the logit of every conditional p(x_d = 1 | x_<d) in one pass.

use rewind::autograd::rand::Rng;
use rewind::nn::loss::bce_with_logits;
use rewind::nn::Module;
use rewind::prelude::*;

/// A density p(x) = Π_d p(x_d | x_<d) whose conditionals are Bernoulli with logits ℓ_d.
pub trait Autoregressive<F: Float>: Module<F> {
    /// The model's name in tables and figures.
    fn name(&self) -> &'static str;

    /// ℓ [N, D] from a batch x [N, D] of 0/1 values, with p(x_d = 1 | x_<d) = σ(ℓ_d); ℓ_d reads
    /// only x_<d.
    fn logits<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F>;

    /// The parameters the model is free to fit (FVSBN stores a square matrix and masks its upper
    /// triangle and diagonal to zero).
    fn free_params(&self) -> usize {
        self.num_params()
    }
}

/// Mean negative log-likelihood in nats per vector, -1/N Σ_n Σ_d log p(x_nd | x_n,<d), from the
/// logits ℓ [N, D] and the data x [N, D].
pub fn nll<'t, F: Float>(logits: Var<'t, F>, x: Var<'t, F>) -> Var<'t, F> {
    let d = logits.shape()[1];
    bce_with_logits(logits, x) * F::from_usize(d)
}

/// Independent Bernoulli pixels: p(x_d = 1) = σ(b_d), D parameters.
pub struct Bernoulli<F: Float> {
    /// b [D].
    pub b: Param<F>,
}

impl<F: Float> Bernoulli<F> {
    /// All pixels at probability ½.
    pub fn new(d: usize) -> Self {
        Bernoulli {
            b: Param::named("b", Tensor::zeros(&[d])),
        }
    }
}

impl<F: Float> Module<F> for Bernoulli<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        vec![("b".into(), &self.b)]
    }
}

impl<F: Float> Autoregressive<F> for Bernoulli<F> {
    fn name(&self) -> &'static str {
        "independent Bernoulli"
    }

    fn logits<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        tape.param(&self.b).broadcast_to(&x.shape())
    }
}

/// Fully visible sigmoid belief net: p(x_d = 1 | x_<d) = σ(b_d + Σ_{j<d} W_dj x_j), W [D, D]
/// masked to its strictly lower triangle, D + D(D-1)/2 free parameters.
///
/// Each conditional is its own logistic regression, fitted separately: conditional d's loss
/// reads only row d of W and b_d, so the gradient of the summed loss in those parameters is the
/// gradient of that conditional's loss alone, and Adam, being per-element, takes exactly the
/// steps D separate runs would. One matmul computes all D of them.
pub struct Fvsbn<F: Float> {
    /// W [D, D]; entries on and above the diagonal stay zero (their gradient is masked).
    pub w: Param<F>,
    /// b [D].
    pub b: Param<F>,
    mask: Tensor<F>,
}

impl<F: Float> Fvsbn<F> {
    /// Every conditional starts at ½ (the loss is convex in each row, so zero is a fine start).
    pub fn new(d: usize) -> Self {
        let mask = (0..d * d)
            .map(|k| if k % d < k / d { F::ONE } else { F::ZERO })
            .collect();
        Fvsbn {
            w: Param::named("w", Tensor::zeros(&[d, d])),
            b: Param::named("b", Tensor::zeros(&[d])),
            mask: Tensor::from_vec(mask, &[d, d]).expect("d·d mask values for a [d, d] shape"),
        }
    }
}

impl<F: Float> Module<F> for Fvsbn<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        vec![("w".into(), &self.w), ("b".into(), &self.b)]
    }
}

impl<F: Float> Autoregressive<F> for Fvsbn<F> {
    fn name(&self) -> &'static str {
        "FVSBN"
    }

    fn logits<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        let w = tape.param(&self.w) * tape.constant(self.mask.clone());
        x.matmul(w.t()) + tape.param(&self.b)
    }

    fn free_params(&self) -> usize {
        let d = self.b.shape()[0];
        d + d * (d - 1) / 2
    }
}

/// NADE (Larochelle & Murray 2011): one hidden layer shared by all conditionals,
/// a_1 = c, a_{d+1} = a_d + W[:, d] x_d, h_d = σ(a_d), p(x_d = 1 | x_<d) = σ(b_d + V[d, :] · h_d),
/// with W [H, D], c [H], V [D, H], b [D]: 2DH + D + H parameters.
pub struct Nade<F: Float> {
    /// W [H, D].
    pub w: Param<F>,
    /// c [H].
    pub c: Param<F>,
    /// V [D, H].
    pub v: Param<F>,
    /// b [D].
    pub b: Param<F>,
}

impl<F: Float> Nade<F> {
    /// W and V from U(-1/√fan_in, 1/√fan_in) (fan-in D for W, H for V), c and b zero.
    pub fn new<R: Rng + ?Sized>(d: usize, hidden: usize, rng: &mut R) -> Self {
        let (kw, kv) = (1.0 / (d as f64).sqrt(), 1.0 / (hidden as f64).sqrt());
        let uniform = |shape: &[usize], k: f64, rng: &mut R| {
            Tensor::uniform(shape, F::from_f64(-k), F::from_f64(k), rng)
        };
        Nade {
            w: Param::named("w", uniform(&[hidden, d], kw, rng)),
            c: Param::named("c", Tensor::zeros(&[hidden])),
            v: Param::named("v", uniform(&[d, hidden], kv, rng)),
            b: Param::named("b", Tensor::zeros(&[d])),
        }
    }
}

impl<F: Float> Module<F> for Nade<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        vec![
            ("w".into(), &self.w),
            ("c".into(), &self.c),
            ("v".into(), &self.v),
            ("b".into(), &self.b),
        ]
    }
}

impl<F: Float> Autoregressive<F> for Nade<F> {
    fn name(&self) -> &'static str {
        "NADE"
    }

    fn logits<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        nade_logits(
            x,
            tape.param(&self.w),
            tape.param(&self.c),
            tape.param(&self.v),
            tape.param(&self.b),
        )
    }
}

/// NADE's logits [N, D] from x [N, D], W [H, D], c [H], V [D, H], b [D], every hidden layer from
/// the running sum: the steps W[:, j] x_j [N, D, H], their exclusive cumulative sum over j plus c
/// gives every a_d, so forward and backward cost O(NDH) where recomputing each a_d from scratch
/// costs O(ND²H).
pub fn nade_logits<'t, F: Float>(
    x: Var<'t, F>,
    w: Var<'t, F>,
    c: Var<'t, F>,
    v: Var<'t, F>,
    b: Var<'t, F>,
) -> Var<'t, F> {
    let steps = x.unsqueeze(2) * w.t().unsqueeze(0);
    let a = x.tape().custom(ExclusiveCumsum, &[steps]) + c;
    (a.sigmoid() * v).sum_axis(2, false) + b
}

/// s_d = Σ_{j<d} u_j along axis 1 of u [N, D, H] (s_1 = 0). Its derivative is the same sum run
/// the other way, ∂L/∂u_j = Σ_{d>j} ∂L/∂s_d; both are one pass, O(NDH).
struct ExclusiveCumsum;

impl<F: Float> CustomOp<F> for ExclusiveCumsum {
    fn name(&self) -> &str {
        "exclusive_cumsum"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F> {
        let u = inputs[0];
        let (n, d, h) = dims(u);
        let (u, mut s) = (u.data(), vec![F::ZERO; n * d * h]);
        for i in 0..n {
            for k in 1..d {
                let (prev, cur) = ((i * d + k - 1) * h, (i * d + k) * h);
                for j in 0..h {
                    s[cur + j] = s[prev + j] + u[prev + j];
                }
            }
        }
        Tensor::from_vec(s, &[n, d, h]).expect("n·d·h sums for an [n, d, h] shape")
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad_output: &Tensor<F>,
    ) -> Vec<Option<Tensor<F>>> {
        let (n, d, h) = dims(inputs[0]);
        let (gs, mut gu) = (grad_output.data(), vec![F::ZERO; n * d * h]);
        for i in 0..n {
            for k in (0..d.saturating_sub(1)).rev() {
                let (cur, next) = ((i * d + k) * h, (i * d + k + 1) * h);
                for j in 0..h {
                    gu[cur + j] = gu[next + j] + gs[next + j];
                }
            }
        }
        vec![Some(
            Tensor::from_vec(gu, &[n, d, h]).expect("n·d·h sums for an [n, d, h] shape"),
        )]
    }
}

#[track_caller]
fn dims<F: Float>(u: &Tensor<F>) -> (usize, usize, usize) {
    match *u.shape() {
        [n, d, h] => (n, d, h),
        ref s => panic!("exclusive_cumsum: expected a 3-D [N, D, H] value, got shape {s:?}"),
    }
}

/// `count` vectors drawn pixel by pixel (ancestral sampling): x_d ~ Bernoulli(σ(ℓ_d)) given the
/// x_<d already drawn. Returns [count, D] of 0/1.
pub fn sample<F: Float, M: Autoregressive<F> + ?Sized, R: Rng + ?Sized>(
    model: &M,
    count: usize,
    d: usize,
    rng: &mut R,
) -> Tensor<F> {
    let mut x = Tensor::zeros(&[count, d]);
    for k in 0..d {
        let tape = Tape::new();
        let logits = model.logits(&tape, tape.constant(x.clone())).value();
        for n in 0..count {
            let p = logits.data()[n * d + k].sigmoid().to_f64();
            x.data_mut()[n * d + k] = if rng.random::<f64>() < p {
                F::ONE
            } else {
                F::ZERO
            };
        }
    }
    x
}
