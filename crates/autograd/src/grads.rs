//! `Grads`: the gradients one backward pass produced (or a user gathered), kept apart from the
//! model.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
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
///
/// Gradients that come from elsewhere (another process, a second-order method, a test) make a
/// `Grads` too, for an optimizer to apply: by the names the model gives its parameters
/// ([`from_named`](Grads::from_named)), or one parameter at a time from [`Grads::default()`]
/// with [`insert`](Grads::insert). A parameter given no gradient is one an optimizer leaves
/// alone, as PyTorch's does a parameter whose `grad` is `None`.
///
/// ```
/// use rewind_autograd::{Grads, Param, Tensor};
///
/// let w = Param::named("weight", Tensor::<f64>::zeros(&[2, 3]));
/// let b = Param::named("bias", Tensor::<f64>::zeros(&[2]));
/// let params = vec![("weight".to_string(), &w), ("bias".to_string(), &b)];
/// let grads = Grads::from_named(params, [("weight", Tensor::full(&[2, 3], 0.5))])?;
/// assert_eq!(grads[&w].data()[0], 0.5);
/// assert!(grads.get(&b).is_none());
/// # Ok::<(), rewind_autograd::GradsError>(())
/// ```
pub struct Grads<F: Float = f32> {
    /// The tape whose backward pass made these gradients; `None` when built by hand.
    tape_id: Option<u64>,
    params: BTreeMap<ParamId, Tensor<F>>,
    nodes: HashMap<usize, Tensor<F>>,
}

impl<F: Float> Grads<F> {
    pub(crate) fn new(tape_id: u64) -> Self {
        Grads {
            tape_id: Some(tape_id),
            ..Grads::default()
        }
    }

    /// Gradients given by the parameters' names: `params` lists the parameters with their names
    /// (what a model's `params()` returns, or any `(name, &Param)` list), `grads` the tensors by
    /// those names. Each tensor must have its parameter's shape; a parameter that
    /// is given none gets no gradient.
    ///
    /// Fails, listing every problem, when a name is no parameter's, a shape differs, a name is
    /// given twice, or a name given belongs to more than one parameter.
    pub fn from_named<'p, N: AsRef<str>>(
        params: impl IntoIterator<Item = (String, &'p Param<F>)>,
        grads: impl IntoIterator<Item = (N, Tensor<F>)>,
    ) -> Result<Self, GradsError>
    where
        F: 'p,
    {
        let params: Vec<(String, &Param<F>)> = params.into_iter().collect();
        let mut out = Grads::default();
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, g) in grads {
            let name = name.as_ref();
            let mut owners = params.iter().filter(|(n, _)| n == name).map(|(_, p)| *p);
            let (Some(p), rest) = (owners.next(), owners.count()) else {
                problems.push(GradProblem::Unknown {
                    name: name.to_string(),
                    shape: g.shape().to_vec(),
                });
                continue;
            };
            if !seen.insert(name.to_string()) {
                problems.push(GradProblem::Repeated {
                    name: name.to_string(),
                });
            } else if rest > 0 {
                problems.push(GradProblem::Ambiguous {
                    name: name.to_string(),
                    count: rest + 1,
                });
            } else if g.shape() != p.shape().as_slice() {
                problems.push(GradProblem::Shape {
                    name: name.to_string(),
                    expected: p.shape().to_vec(),
                    found: g.shape().to_vec(),
                });
            } else {
                out.params.insert(p.id(), g);
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            let names = params.into_iter().map(|(n, _)| n).collect();
            Err(GradsError { problems, names })
        }
    }

    /// Sets ∂L/∂p to `g`, replacing any gradient `p` had. Fails, keeping nothing, when `g` is
    /// not `p`'s shape.
    pub fn insert(&mut self, p: &Param<F>, g: Tensor<F>) -> Result<(), GradsError> {
        if g.shape() != p.shape().as_slice() {
            return Err(GradsError {
                problems: vec![GradProblem::Shape {
                    name: p.name().unwrap_or("(unnamed)").to_string(),
                    expected: p.shape().to_vec(),
                    found: g.shape().to_vec(),
                }],
                names: Vec::new(),
            });
        }
        self.params.insert(p.id(), g);
        Ok(())
    }

    /// The gradients of `params` by their names, for the parameters that have one: what
    /// [`from_named`](Grads::from_named) reads back (to send them elsewhere, or save them).
    pub fn named<'p>(
        &self,
        params: impl IntoIterator<Item = (String, &'p Param<F>)>,
    ) -> BTreeMap<String, Tensor<F>>
    where
        F: 'p,
    {
        params
            .into_iter()
            .filter_map(|(name, p)| self.get(p).map(|g| (name, g.clone())))
            .collect()
    }

    pub(crate) fn insert_param(&mut self, id: ParamId, g: Tensor<F>) {
        self.params.insert(id, g);
    }

    pub(crate) fn insert_node(&mut self, node: usize, g: Tensor<F>) {
        self.nodes.insert(node, g);
    }

    /// The gradient kept for node `node` of the tape these gradients came from.
    pub(crate) fn node(&self, node: usize) -> Option<&Tensor<F>> {
        self.nodes.get(&node)
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
    /// Panics if `v` lives on another tape than the one these gradients came from, or these
    /// gradients were built by hand.
    #[track_caller]
    pub fn wrt(&self, v: Var<'_, F>) -> Option<&Tensor<F>> {
        match self.tape_id {
            None => panic!(
                "Grads: these gradients were built by hand, not by a backward pass; they hold no node's gradient"
            ),
            Some(id) if id != v.tape().id() => {
                panic!("Grads: the Var belongs to another tape than these gradients")
            }
            Some(_) => self.nodes.get(&v.index()),
        }
    }

    /// Adds `other`'s parameter gradients to these (one shard's gradients to the others'): a
    /// parameter only `other` has is copied in. The gradients of nodes are not added (they belong
    /// to one tape each), and these no longer answer for any tape's nodes.
    ///
    /// Panics, at the caller's line, if a parameter's two gradients differ in shape.
    #[track_caller]
    pub fn accumulate(&mut self, other: &Grads<F>) {
        self.tape_id = None;
        self.nodes.clear();
        for (id, g) in &other.params {
            match self.params.get_mut(id) {
                Some(mine) => {
                    assert!(
                        mine.shape() == g.shape(),
                        "accumulate: gradients of one parameter differ in shape: {:?} vs {:?}",
                        mine.shape(),
                        g.shape()
                    );
                    for (a, &b) in mine.data_mut().iter_mut().zip(g.data()) {
                        *a += b;
                    }
                }
                None => {
                    self.params.insert(*id, g.clone());
                }
            }
        }
    }

    /// The sum of `parts`' parameter gradients (the shards of one update), each parameter's
    /// added in the order of `parts`, so the result is the same whatever thread adds it; the
    /// work is shared out among the cores in bands of equal length. A parameter only some parts
    /// have is the sum of those. Node gradients are not summed.
    ///
    /// Panics, at the caller's line, if a parameter's gradients differ in shape.
    #[track_caller]
    pub fn sum(parts: &[Grads<F>]) -> Grads<F> {
        let ids: Vec<ParamId> = parts
            .iter()
            .flat_map(|p| p.params.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in &ids {
            let mut shapes = parts
                .iter()
                .filter_map(|p| p.params.get(id))
                .map(|g| g.shape());
            let first = shapes.next().expect("some part has it");
            if let Some(other) = shapes.find(|s| *s != first) {
                panic!("sum: gradients of one parameter differ in shape: {first:?} vs {other:?}");
            }
        }
        // Each sum starts as the first part's gradient (shared, not copied, when it is the only
        // one); the others are added band by band, in the order of `parts`.
        let added: Vec<bool> = ids
            .iter()
            .map(|id| parts.iter().filter(|p| p.params.contains_key(id)).count() > 1)
            .collect();
        let mut sums: Vec<Tensor<F>> = ids
            .iter()
            .map(|id| {
                let first = parts.iter().find_map(|p| p.params.get(id));
                first.expect("some part has it").clone()
            })
            .collect();
        let lengths: Vec<usize> = (sums.iter().zip(&added))
            .map(|(s, &added)| if added { s.numel() } else { 0 })
            .collect();
        let layout = sum_bands(&lengths);
        let mut rest: Vec<&mut [F]> = (sums.iter_mut().zip(&added))
            .map(|(s, &added)| if added { s.data_mut() } else { &mut [] })
            .collect();
        let mut bands: Vec<std::sync::Mutex<Option<SumBand<'_, F>>>> =
            Vec::with_capacity(layout.len());
        for &(i, start, len) in &layout {
            let (band, tail) = std::mem::take(&mut rest[i]).split_at_mut(len);
            rest[i] = tail;
            bands.push(std::sync::Mutex::new(Some((i, start, band))));
        }
        // Bands rather than whole parameters: a worker given a large parameter while the caller
        // adds the small ones would keep it waiting long enough to look held up by another
        // process, and send the next jobs (a whole update's shards) to one core.
        for first in (0..bands.len()).step_by(crate::kernels::pool::MAX_PARTS) {
            let n = crate::kernels::pool::MAX_PARTS.min(bands.len() - first);
            crate::kernels::pool::run(n, &|k| {
                let taken = bands[first + k]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let Some((i, start, band)) = taken else {
                    return;
                };
                let id = &ids[i];
                for g in parts.iter().filter_map(|p| p.params.get(id)).skip(1) {
                    let added = &g.data()[start..start + band.len()];
                    for (a, &b) in band.iter_mut().zip(added) {
                        *a += b;
                    }
                }
            });
        }
        drop(bands);
        Grads {
            params: ids.into_iter().zip(sums).collect(),
            ..Grads::default()
        }
    }

    /// Multiplies every gradient by `s` (a sum of shards' gradients turned into their mean's).
    pub fn scale(&mut self, s: F) {
        for g in self.params.values_mut().chain(self.nodes.values_mut()) {
            g.data_mut().iter_mut().for_each(|v| *v *= s);
        }
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

    /// What these gradients hold, for a message about one they do not.
    fn contents(&self) -> String {
        let origin = match self.tape_id {
            Some(_) => "from a backward pass",
            None => "built by hand",
        };
        let shapes: Vec<&[usize]> = self.params.values().map(|g| g.shape()).collect();
        let params = match shapes[..] {
            [] => "no parameter".to_string(),
            [shape] => format!("1 parameter (shape {shape:?})"),
            _ => format!("{} parameters (shapes {shapes:?})", shapes.len()),
        };
        let nodes = match self.nodes.len() {
            0 => "no node".to_string(),
            1 => "1 node".to_string(),
            n => format!("{n} nodes"),
        };
        format!("these Grads ({origin}) hold the gradients of {params} and of {nodes}")
    }
}

/// No gradients, from no tape: the start of a `Grads` built by hand with
/// [`insert`](Grads::insert).
impl<F: Float> Default for Grads<F> {
    fn default() -> Self {
        Grads {
            tape_id: None,
            params: BTreeMap::new(),
            nodes: HashMap::new(),
        }
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

    // A panic inside a closure would point at the closure; here it points at `grads[&p]`.
    #[track_caller]
    fn index(&self, p: &Param<F>) -> &Tensor<F> {
        let Some(g) = self.get(p) else {
            let name = p
                .name()
                .map_or("(unnamed)".to_string(), |n| format!("`{n}`"));
            panic!(
                "Grads: no gradient for parameter {name} {:?}: it was not put on the tape, the output does not depend on it, or (built by hand) none was given; {}",
                p.shape(),
                self.contents()
            )
        };
        g
    }
}

impl<'t, F: Float> Index<Var<'t, F>> for Grads<F> {
    type Output = Tensor<F>;

    #[track_caller]
    fn index(&self, v: Var<'t, F>) -> &Tensor<F> {
        let Some(g) = self.wrt(v) else {
            panic!(
                "Grads: no gradient kept for node {} {:?}: only requested leaves (tape.var) and nodes marked retain_grad keep one, and only if the output depends on them; {}",
                v.index(),
                v.shape(),
                self.contents()
            )
        };
        g
    }
}

/// Why gradients given by hand do not fit the parameters: every problem found, in the order the
/// gradients were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GradsError {
    /// Each problem.
    pub problems: Vec<GradProblem>,
    /// The parameters' names, to show beside an unknown one.
    names: Vec<String>,
}

/// One way a named gradient does not fit the parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GradProblem {
    /// No parameter has this name.
    Unknown {
        /// The name given.
        name: String,
        /// The gradient's shape.
        shape: Vec<usize>,
    },
    /// The gradient's shape is not its parameter's.
    Shape {
        /// The parameter (`(unnamed)` for one without a name).
        name: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        found: Vec<usize>,
    },
    /// The name is given more than once.
    Repeated {
        /// The name.
        name: String,
    },
    /// More than one parameter has this name, so it does not say which one is meant.
    Ambiguous {
        /// The name.
        name: String,
        /// How many parameters have it.
        count: usize,
    },
}

impl fmt::Display for GradProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GradProblem::Unknown { name, shape } => {
                write!(f, "unknown `{name}` {shape:?} (no parameter has that name)")
            }
            GradProblem::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "`{name}` has shape {found:?}, the parameter is {expected:?}"
            ),
            GradProblem::Repeated { name } => write!(f, "`{name}` is given twice"),
            GradProblem::Ambiguous { name, count } => {
                write!(f, "{count} parameters are named `{name}`")
            }
        }
    }
}

impl fmt::Display for GradsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        write!(
            f,
            "the gradients do not fit the parameters: {}",
            list.join("; ")
        )?;
        if list.iter().any(|p| p.starts_with("unknown")) {
            let names: Vec<String> = self.names.iter().map(|n| format!("`{n}`")).collect();
            write!(f, ". The parameters are {}", names.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for GradsError {}

/// Elements in one band of [`Grads::sum`]: 128 KiB of f32, so that the bands of a large weight
/// spread evenly over the cores.
const SUM_BAND: usize = 1 << 15;

/// A band of one of [`Grads::sum`]'s sums: the gradient's index, the band's first element, and
/// its elements.
type SumBand<'a, F> = (usize, usize, &'a mut [F]);

/// [`Grads::sum`]'s bands over gradients of `lengths` elements: (gradient, first element,
/// length), each at most [`SUM_BAND`] long and never empty, covering every element once in
/// order.
fn sum_bands(lengths: &[usize]) -> Vec<(usize, usize, usize)> {
    lengths
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| {
            (0..n)
                .step_by(SUM_BAND)
                .map(move |start| (i, start, SUM_BAND.min(n - start)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::panic::{self, AssertUnwindSafe, Location};
    use std::sync::Once;

    use super::*;
    use crate::tape::Tape;

    thread_local! {
        /// Whether this thread's next panic is expected, and where it said it happened.
        static EXPECTED: Cell<bool> = const { Cell::new(false) };
        static SITE: RefCell<Option<(String, u32)>> = const { RefCell::new(None) };
    }

    /// The message of the panic `f` raises and the file and line it reports. The panic hook is
    /// global and tests run on parallel threads, so it records only a panic its thread expects
    /// and hands every other one to the hook it replaced.
    fn panic_site(f: impl FnOnce()) -> (String, String, u32) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let others = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if EXPECTED.get() {
                    let at = info.location().map(|l| (l.file().to_string(), l.line()));
                    SITE.set(at);
                } else {
                    others(info);
                }
            }));
        });
        EXPECTED.set(true);
        let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("no panic");
        EXPECTED.set(false);
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        let (file, line) = SITE.take().expect("the hook saw the panic");
        (message, file, line)
    }

    #[test]
    fn a_missing_parameter_panics_at_the_indexing_line_naming_it_and_what_grads_holds() {
        let weight = Param::named("weight", Tensor::<f64>::zeros(&[2, 3]));
        let bias = Param::named("bias", Tensor::<f64>::zeros(&[2]));
        let mut grads = Grads::default();
        grads.insert(&bias, Tensor::ones(&[2])).unwrap();
        let here = Location::caller();
        let (message, file, line) = panic_site(|| _ = &grads[&weight]);
        assert_eq!((file.as_str(), line), (here.file(), here.line() + 1));
        assert!(
            message.starts_with("Grads: no gradient for parameter `weight` [2, 3]:"),
            "{message}"
        );
        assert!(
            message.ends_with(
                "these Grads (built by hand) hold the gradients of 1 parameter (shape [2]) and of no node"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_var_without_a_kept_gradient_panics_at_the_indexing_line() {
        let tape = Tape::<f64>::new();
        let w = Param::new(Tensor::ones(&[3]));
        let x = tape.var(Tensor::ones(&[3]));
        let hidden = tape.param(&w) * x;
        let grads = hidden.sum().backward();
        let here = Location::caller();
        let (message, file, line) = panic_site(|| _ = &grads[hidden]);
        assert_eq!((file.as_str(), line), (here.file(), here.line() + 1));
        assert!(
            message.starts_with("Grads: no gradient kept for node 2 [3]:"),
            "{message}"
        );
        assert!(
            message.ends_with(
                "these Grads (from a backward pass) hold the gradients of 1 parameter (shape [3]) and of 1 node"
            ),
            "{message}"
        );
    }

    /// The bands of a sum cover every element of every gradient once, in order, none empty or
    /// longer than `SUM_BAND`: a large weight is cut into many, so that no core is handed it
    /// whole while the others add the small ones.
    #[test]
    fn sum_bands_cover_each_element_once_in_short_bands() {
        let lengths = [0, 1, SUM_BAND, SUM_BAND + 1, 5 * SUM_BAND - 3, 7];
        let bands = sum_bands(&lengths);
        let mut next = vec![0; lengths.len()];
        for &(i, start, len) in &bands {
            assert!(len > 0 && len <= SUM_BAND, "band {i}: {start} + {len}");
            assert_eq!(start, next[i], "gradient {i}: a gap or an overlap");
            next[i] += len;
        }
        assert_eq!(next, lengths);
        assert_eq!(bands.iter().filter(|b| b.0 == 4).count(), 5);
    }

    /// A sum in bands is each element's sum in the order of the parts, bit for bit, across the
    /// bands' edges; a gradient only one part has is that part's, shared rather than copied.
    #[test]
    fn a_sum_in_bands_adds_in_the_parts_order() {
        let n = 2 * SUM_BAND + 5;
        let big = Param::named("big", Tensor::<f32>::zeros(&[n]));
        let small = Param::named("small", Tensor::<f32>::zeros(&[3]));
        let values = |k: f32| {
            let v: Vec<f32> = (0..n)
                .map(|i| (i as f32 * 0.37 + k).sin() * 10f32.powf(k))
                .collect();
            Tensor::from_vec(v, &[n]).unwrap()
        };
        let mut parts = [Grads::default(), Grads::default(), Grads::default()];
        for (k, part) in parts.iter_mut().enumerate() {
            part.insert(&big, values(k as f32 - 1.0)).unwrap();
        }
        let only = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        parts[1].insert(&small, only).unwrap();
        let sum = Grads::sum(&parts);
        let [a, b, c] = parts.each_ref().map(|p| p[&big].data().to_vec());
        for i in 0..n {
            assert_eq!(sum[&big].data()[i], (a[i] + b[i]) + c[i], "element {i}");
        }
        assert!(std::ptr::eq(
            sum[&small].data().as_ptr(),
            parts[1][&small].data().as_ptr()
        ));
        // The first part's gradient is copied, not added onto.
        assert_eq!(parts[0][&big].data(), values(-1.0).data());
    }
}
