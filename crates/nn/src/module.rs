//! `Module`: a model's parameters, listed with PyTorch's dotted names.

use rewind_autograd::{Float, Param};

/// Anything that owns parameters: a layer, a stack of layers, a whole model.
///
/// A module declares its parameters once, in [`params`](Module::params): each with its dotted name
/// as in PyTorch's `state_dict` (`encoder.rnn.weight_ih_l0`), in a fixed order. Everything else
/// follows from that one list: counting, saving and loading, gradient checks, and optimizer
/// updates (a [`Param`] is updated through a shared reference, as PyTorch's are). A model made of
/// parts prefixes each part's names with the field that holds it, using [`nested`]:
///
/// ```
/// use rewind_autograd::{Param, Tensor};
/// use rewind_nn::{nested, Module};
///
/// struct Affine {
///     weight: Param,
///     bias: Param,
/// }
///
/// impl Module for Affine {
///     fn params(&self) -> Vec<(String, &Param)> {
///         vec![("weight".into(), &self.weight), ("bias".into(), &self.bias)]
///     }
/// }
///
/// struct Model {
///     head: Affine,
/// }
///
/// impl Module for Model {
///     fn params(&self) -> Vec<(String, &Param)> {
///         nested("head", self.head.params())
///     }
/// }
///
/// let model = Model {
///     head: Affine { weight: Param::new(Tensor::zeros(&[2, 3])), bias: Param::new(Tensor::zeros(&[2])) },
/// };
/// let names: Vec<String> = model.params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["head.weight", "head.bias"]);
/// assert_eq!(model.num_params(), 8);
///
/// // The same list updates the parameters, as an optimizer or a load does.
/// for (_, p) in model.params() {
///     p.set(Tensor::ones(&p.shape()));
/// }
/// assert_eq!(model.head.bias.value().data(), &[1.0, 1.0]);
/// ```
pub trait Module<F: Float = f32> {
    /// Every parameter with its dotted name, in a fixed order, each listed once.
    fn params(&self) -> Vec<(String, &Param<F>)>;

    /// The total number of scalar parameters.
    fn num_params(&self) -> usize {
        self.params().iter().map(|(_, p)| p.value().numel()).sum()
    }
}

/// Prefixes each name with `prefix.`, for a part of a larger model.
pub fn nested<T>(prefix: &str, items: Vec<(String, T)>) -> Vec<(String, T)> {
    items
        .into_iter()
        .map(|(name, p)| (format!("{prefix}.{name}"), p))
        .collect()
}

/// A list of parameters is a module whose names are the parameters' own (or their position).
impl<F: Float> Module<F> for Vec<Param<F>> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        self.iter()
            .enumerate()
            .map(|(i, p)| (own_name(i, p), p))
            .collect()
    }
}

fn own_name<F: Float>(i: usize, p: &Param<F>) -> String {
    p.name().map_or_else(|| i.to_string(), str::to_string)
}
