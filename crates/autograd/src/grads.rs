//! `Grads`: the gradients one backward pass produced, kept apart from the model.

use std::collections::{BTreeMap, HashMap};
use std::ops::Index;

use crate::float::Float;
use crate::param::{Param, ParamId};
use crate::tape::Var;
use crate::tensor::Tensor;

/// The gradients of one backward pass: one per [`Param`] that the output depends on, plus one per
/// requested leaf ([`Tape::var`](crate::Tape::var)) and per node marked with
/// [`Var::retain_grad`].
///
/// There is no `zero_grad`: every backward pass returns a fresh `Grads`. Parameters iterate in
/// creation order, so sums over them (a global norm) are deterministic.
pub struct Grads<F: Float = f32> {
    tape_id: u64,
    params: BTreeMap<ParamId, Tensor<F>>,
    nodes: HashMap<usize, Tensor<F>>,
}

impl<F: Float> Grads<F> {
    pub(crate) fn new(tape_id: u64) -> Self {
        Grads {
            tape_id,
            params: BTreeMap::new(),
            nodes: HashMap::new(),
        }
    }

    pub(crate) fn insert_param(&mut self, id: ParamId, g: Tensor<F>) {
        self.params.insert(id, g);
    }

    pub(crate) fn insert_node(&mut self, node: usize, g: Tensor<F>) {
        self.nodes.insert(node, g);
    }

    /// ∂L/∂p, or `None` when the output does not depend on `p` on this tape.
    pub fn get(&self, p: &Param<F>) -> Option<&Tensor<F>> {
        self.params.get(&p.id())
    }

    /// ∂L/∂p, mutably (for clipping).
    pub fn get_mut(&mut self, p: &Param<F>) -> Option<&mut Tensor<F>> {
        self.params.get_mut(&p.id())
    }

    /// ∂L/∂p by parameter id.
    pub fn by_id(&self, id: ParamId) -> Option<&Tensor<F>> {
        self.params.get(&id)
    }

    /// ∂L/∂v for a requested leaf or a node marked with `retain_grad`; `None` when `v` has no
    /// kept gradient (it is an intermediate node, or the output does not depend on it).
    ///
    /// Panics if `v` lives on another tape than the one these gradients came from.
    #[track_caller]
    pub fn wrt(&self, v: Var<'_, F>) -> Option<&Tensor<F>> {
        if v.tape().id() != self.tape_id {
            panic!("Grads: the Var belongs to another tape than these gradients");
        }
        self.nodes.get(&v.index())
    }

    /// The parameters' gradients in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Tensor<F>)> {
        self.params.iter().map(|(&id, g)| (id, g))
    }

    /// The parameters' gradients in creation order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Tensor<F>)> {
        self.params.iter_mut().map(|(&id, g)| (id, g))
    }

    /// The number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when no parameter got a gradient.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

impl<F: Float> std::fmt::Debug for Grads<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<&[usize]> = self.params.values().map(|g| g.shape()).collect();
        f.debug_struct("Grads")
            .field("params", &shapes)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl<F: Float> Index<&Param<F>> for Grads<F> {
    type Output = Tensor<F>;

    #[track_caller]
    fn index(&self, p: &Param<F>) -> &Tensor<F> {
        self.get(p).unwrap_or_else(|| {
            panic!(
                "Grads: no gradient for parameter {} {:?}: it was not put on the tape, or the output does not depend on it",
                p.name().unwrap_or("(unnamed)"),
                p.shape()
            )
        })
    }
}

impl<'t, F: Float> Index<Var<'t, F>> for Grads<F> {
    type Output = Tensor<F>;

    #[track_caller]
    fn index(&self, v: Var<'t, F>) -> &Tensor<F> {
        self.wrt(v).unwrap_or_else(|| {
            panic!(
                "Grads: no gradient kept for node {} {:?}: only requested leaves (tape.var) and nodes marked retain_grad keep one, and only if the output depends on them",
                v.index(),
                v.shape()
            )
        })
    }
}
