//! The `Optimizer` trait, parameter groups, and the state an optimizer saves and loads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rewind_autograd::io::{load_tensors, save_tensors, IoError, TensorFile};
use rewind_autograd::{Float, Grads, Param, Tensor};
use rewind_nn::Module;

use crate::fused::mul_add;

/// An update rule. `step` changes, in place, every parameter of `model` that has a gradient in
/// `grads`; parameters without one are left alone (and their state does not advance), as in
/// PyTorch.
///
/// The optimizers' builders and `set_lr` panic, at the caller's line, on a value that would
/// make a weight NaN, and an infinite value is one that is infinite once rounded to `F`: above
/// 3.4e38 for an f32 optimizer.
pub trait Optimizer<F: Float = f32> {
    /// One update, to each parameter `model.params()` lists (through [`Param::update`]); one
    /// listed under two names (a tied weight) is updated once. The model is taken exclusively,
    /// though a `Param` can be updated through a shared reference, to say that the step changes
    /// it.
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>);

    /// The learning rate (of the default group; other groups scale it, see [`ParamGroup`],
    /// unless [`set_group_lrs`](Optimizer::set_group_lrs) set their own).
    fn lr(&self) -> f64;

    /// Sets the learning rate, as a schedule does; every group's rate becomes `lr` times its
    /// [`lr_scale`](ParamGroup::lr_scale) again.
    ///
    /// Panics, at the caller's line, unless `lr` is finite and ≥ 0, and finite times each
    /// group's [`lr_scale`](ParamGroup::lr_scale): a NaN or infinite rate makes every weight NaN
    /// at the next step.
    #[track_caller]
    fn set_lr(&mut self, lr: f64);

    /// Each parameter group's learning rate, the default group's ([`lr`](Optimizer::lr)) first,
    /// then each added group's in the order added: torch's `[g["lr"] for g in
    /// optimizer.param_groups]` with the default group as group 0.
    fn group_lrs(&self) -> Vec<f64> {
        vec![self.lr()]
    }

    /// Each group's [`lr_scale`](ParamGroup::lr_scale), in the order of
    /// [`group_lrs`](Optimizer::group_lrs) (the default group's is 1).
    fn lr_scales(&self) -> Vec<f64> {
        vec![1.0]
    }

    /// Sets each group's rate on its own, in the order of [`group_lrs`](Optimizer::group_lrs),
    /// as [`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau) does (torch cuts and floors each
    /// group's rate separately). The next [`set_lr`](Optimizer::set_lr) scales them all from
    /// one rate again.
    ///
    /// Panics, at the caller's line, unless `lrs` holds one rate per group, each finite and ≥ 0.
    #[track_caller]
    fn set_group_lrs(&mut self, lrs: &[f64]) {
        assert!(
            lrs.len() == 1,
            "optimizer: set_group_lrs takes one rate per parameter group, 1 here, got {}",
            lrs.len()
        );
        self.set_lr(lrs[0]);
    }

    /// Everything needed to resume exactly: hyperparameters and per-parameter buffers, keyed by
    /// parameter name.
    fn state(&self) -> OptimState<F>;

    /// Restores what [`state`](Optimizer::state) returned. Fails, changing nothing, when the
    /// state cannot be resumed from: it belongs to another kind of optimizer; its learning rate
    /// is not finite and ≥ 0; a step count is not a whole number from 0 to 2^53; an entry is not
    /// a buffer this optimizer keeps for a parameter with a step count; a buffer holds a NaN or
    /// an infinity (the run it was saved from had diverged), a sum or average of squares holds a
    /// negative number, NAdam's product of momentum coefficients or ASGD's μ lies outside [0, 1],
    /// or ASGD's η is negative (each would make the next step NaN or climb the loss); a buffer that holds one number holds more, or one with its
    /// parameter's shape differs from another buffer of that parameter, here or in the state.
    ///
    /// Without the model the optimizer cannot know its parameters' shapes: a state saved for
    /// another model may load, and then the first step panics on a buffer of the wrong shape.
    /// [`load_state_for`](Optimizer::load_state_for) checks them.
    fn load_state(&mut self, state: &OptimState<F>) -> Result<(), StateError>;

    /// [`load_state`](Optimizer::load_state) for `model`, the model it will step: also fails,
    /// changing nothing, when the state holds a parameter `model` does not list (a state for
    /// more parameters, or other ones), or a buffer whose shape is not its parameter's. A
    /// parameter of `model` that the state lacks starts afresh at its next step, as one that
    /// never had a gradient does.
    fn load_state_for(
        &mut self,
        model: &dyn Module<F>,
        state: &OptimState<F>,
    ) -> Result<(), StateError>;

    /// The momentum a schedule cycles ([`CyclicLr`](crate::CyclicLr),
    /// [`OneCycleLr`](crate::OneCycleLr)), as PyTorch's do: `momentum` for [`Sgd`](crate::Sgd)
    /// and [`RmsProp`](crate::RmsProp), β1 for the Adam family ([`Adam`](crate::Adam),
    /// [`Adamax`](crate::Adamax), [`NAdam`](crate::NAdam), [`RAdam`](crate::RAdam)); None for an
    /// optimizer that has neither (the default).
    fn momentum(&self) -> Option<f64> {
        None
    }

    /// Sets the momentum [`momentum`](Optimizer::momentum) reads, as a schedule does.
    ///
    /// Panics, at the caller's line, on a value the optimizer's builder refuses (a momentum
    /// below 0 or infinite, a β1 outside [0, 1)), and on an optimizer without a momentum.
    #[track_caller]
    fn set_momentum(&mut self, momentum: f64) {
        panic!("optimizer: no momentum or beta1 to set to {momentum}");
    }
}

/// The [`Optimizer`] methods `momentum` and `set_momentum` of an optimizer named `$name` whose
/// momentum is its field `momentum` (refused unless finite and ≥ 0) or the first of its `betas`
/// (refused outside [0, 1)).
macro_rules! momentum_methods {
    ($name:literal, momentum) => {
        fn momentum(&self) -> Option<f64> {
            Some(self.momentum)
        }

        fn set_momentum(&mut self, momentum: f64) {
            $crate::optimizer::check_non_negative::<F>($name, "momentum", momentum);
            self.momentum = momentum;
        }
    };
    ($name:literal, beta1) => {
        fn momentum(&self) -> Option<f64> {
            Some(self.betas.0)
        }

        fn set_momentum(&mut self, beta1: f64) {
            $crate::optimizer::check_beta($name, "beta1", beta1);
            self.betas.0 = beta1;
        }
    };
}
pub(crate) use momentum_methods;

/// The builder methods every optimizer has: `weight_decay` (documented by the literal given,
/// refused unless finite and ≥ 0 with a message naming the optimizer `$name`), `maximize` and
/// `group`.
macro_rules! shared_options {
    ($name:literal, $decay_doc:literal) => {
        #[doc = $decay_doc]
        ///
        /// Panics if it is negative or NaN, as PyTorch refuses it, or infinite.
        #[track_caller]
        pub fn weight_decay(mut self, weight_decay: f64) -> Self {
            $crate::optimizer::check_non_negative::<F>($name, "weight_decay", weight_decay);
            self.hyper.weight_decay = weight_decay;
            self
        }

        /// Ascends the objective instead of descending it (PyTorch's `maximize`, off by
        /// default): the gradient is negated, `g ← -g`, before anything else, weight decay
        /// included, so the step is the one the same rule takes to minimise `-f`.
        pub fn maximize(mut self, maximize: bool) -> Self {
            self.hyper.maximize = maximize;
            self
        }

        /// Adds a parameter group with its own options.
        ///
        /// Panics if the group sets an option this optimizer does not have (betas, eps or
        /// momentum), or if its weight decay, eps or momentum, or the learning rate times its
        /// `lr_scale`, is infinite in `F`.
        #[track_caller]
        pub fn group(mut self, group: $crate::optimizer::ParamGroup) -> Self {
            self.hyper.add_group::<F>(group);
            self
        }
    };
}
pub(crate) use shared_options;

/// Builder methods that each set one `f64` hyperparameter `$field` (documented by the doc comments
/// given), refused by the check `$check` of this module (`check_non_negative`, ...) at the
/// caller's line with a message naming the optimizer `$name`.
macro_rules! checked_options {
    ($name:literal; $($(#[$doc:meta])* $field:ident: $check:ident),+ $(,)?) => {
        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $field(mut self, $field: f64) -> Self {
                $crate::optimizer::$check::<F>($name, stringify!($field), $field);
                self.$field = $field;
                self
            }
        )+
    };
}
pub(crate) use checked_options;

/// The builder method `betas` of the Adam family (documented by the doc comments given), each
/// beta refused outside [0, 1) at the caller's line with a message naming the optimizer `$name`.
macro_rules! betas_option {
    ($name:literal; $(#[$doc:meta])*) => {
        $(#[$doc])*
        #[track_caller]
        pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
            $crate::optimizer::check_beta($name, "beta1", beta1);
            $crate::optimizer::check_beta($name, "beta2", beta2);
            self.betas = (beta1, beta2);
            self
        }
    };
}
pub(crate) use betas_option;

/// The builder method `decoupled_weight_decay`, which makes an optimizer its `$variant` (RAdamW,
/// NAdamW): weight decay applied to the weights, as AdamW does.
macro_rules! decoupled_weight_decay_option {
    ($variant:literal) => {
        #[doc = concat!(
            $variant,
            ": apply the weight decay to the weights, θ ← θ(1 - lr·λ), as AdamW does, instead\n",
            "of adding λθ to the gradient."
        )]
        pub fn decoupled_weight_decay(mut self, decoupled: bool) -> Self {
            self.decoupled = decoupled;
            self
        }
    };
}
pub(crate) use decoupled_weight_decay_option;

/// The [`Optimizer`] methods that only read or write the learning rates and the buffers: `lr`,
/// `set_lr`, `group_lrs`, `lr_scales`, `set_group_lrs`, `state`, `load_state` and
/// `load_state_for`, the state holding the buffers `$layout` lists under the kind `$kind` (or
/// `$decoupled` when the optimizer's `decoupled` field is set).
macro_rules! lr_and_state {
    ($kind:literal, $layout:expr) => {
        $crate::optimizer::lr_and_state!(@ |_: &Self| $kind, $layout);
    };
    ($kind:literal or decoupled $decoupled:literal, $layout:expr) => {
        $crate::optimizer::lr_and_state!(
            @ |o: &Self| if o.decoupled { $decoupled } else { $kind },
            $layout
        );
    };
    (@ $kind_of:expr, $layout:expr) => {
        fn lr(&self) -> f64 {
            self.hyper.lr
        }

        fn set_lr(&mut self, lr: f64) {
            self.hyper.set_lr::<F>(lr);
        }

        fn group_lrs(&self) -> Vec<f64> {
            self.hyper.group_lrs()
        }

        fn lr_scales(&self) -> Vec<f64> {
            self.hyper.lr_scales()
        }

        fn set_group_lrs(&mut self, lrs: &[f64]) {
            self.hyper.set_group_lrs::<F>(lrs);
        }

        fn state(&self) -> $crate::optimizer::OptimState<F> {
            self.buffers.state(($kind_of)(self), self.hyper.lr)
        }

        fn load_state(
            &mut self,
            state: &$crate::optimizer::OptimState<F>,
        ) -> Result<(), $crate::optimizer::StateError> {
            let kind = ($kind_of)(self);
            self.buffers
                .restore(state, kind, $layout, &mut self.hyper, None)
        }

        fn load_state_for(
            &mut self,
            model: &dyn rewind_nn::Module<F>,
            state: &$crate::optimizer::OptimState<F>,
        ) -> Result<(), $crate::optimizer::StateError> {
            let kind = ($kind_of)(self);
            self.buffers
                .restore(state, kind, $layout, &mut self.hyper, Some(model))
        }
    };
}
pub(crate) use lr_and_state;

/// Whether `value` is finite once rounded to `F`, as a step uses it.
fn finite_in<F: Float>(value: f64) -> bool {
    F::from_f64(value).is_finite()
}

/// " (infinite as f32)" when `value` is finite but rounds to an infinity in `F` (above 3.4e38
/// for f32), else nothing: the end of a message refusing it.
fn rounding_note<F: Float>(value: f64) -> String {
    if value.is_finite() && !finite_in::<F>(value) {
        format!(" (infinite as {})", std::any::type_name::<F>())
    } else {
        String::new()
    }
}

/// Panics, at the caller's line, unless `value` is finite in `F` and ≥ 0: PyTorch's `ValueError`
/// for a learning rate, a momentum or a weight decay below 0 (and NaN, which no comparison
/// admits), and an infinity, which makes the weights NaN.
#[track_caller]
pub(crate) fn check_non_negative<F: Float>(optimizer: &str, name: &str, value: f64) {
    assert!(
        value >= 0.0 && finite_in::<F>(value),
        "{optimizer}: {name} must be finite and >= 0, got {value:?}{}",
        rounding_note::<F>(value)
    );
}

/// Panics, at the caller's line, unless `value` is finite in `F` and > 0, as an eps must be:
/// with eps 0 an element whose gradients have all been 0 is updated by 0 / 0.
#[track_caller]
pub(crate) fn check_positive<F: Float>(optimizer: &str, name: &str, value: f64) {
    assert!(
        value > 0.0 && finite_in::<F>(value),
        "{optimizer}: {name} must be finite and > 0, got {value:?}{}",
        rounding_note::<F>(value)
    );
}

/// Panics, at the caller's line, unless `value` is finite in `F`.
#[track_caller]
pub(crate) fn check_finite<F: Float>(optimizer: &str, name: &str, value: f64) {
    assert!(
        finite_in::<F>(value),
        "{optimizer}: {name} must be finite, got {value:?}{}",
        rounding_note::<F>(value)
    );
}

/// Panics, at the caller's line, unless 0 ≤ `value` ≤ 1, as a decay rate that weighs a running
/// mean against a square must be: above 1 the mean goes negative and its square root is NaN.
#[track_caller]
pub(crate) fn check_unit(optimizer: &str, name: &str, value: f64) {
    assert!(
        (0.0..=1.0).contains(&value),
        "{optimizer}: {name} must be in [0, 1], got {value:?}"
    );
}

/// Panics, at the caller's line, unless 0 ≤ `value` < 1, as PyTorch requires of each beta.
#[track_caller]
pub(crate) fn check_beta(optimizer: &str, name: &str, value: f64) {
    assert!(
        (0.0..1.0).contains(&value),
        "{optimizer}: {name} must be in [0, 1), got {value:?}"
    );
}

/// Options for the parameters whose names a rule selects: e.g. no weight decay on biases, or
/// other betas. Each option the group sets replaces the optimizer's own for its parameters (as
/// PyTorch's per-group options do); an optimizer refuses a group that sets an option it does not
/// have.
pub struct ParamGroup {
    selects: Box<dyn Fn(&str) -> bool + Send + Sync>,
    lr_scale: f64,
    /// The group's own rate, once [`Optimizer::set_group_lrs`] set one, in place of the
    /// optimizer's times `lr_scale`.
    lr: Option<f64>,
    weight_decay: Option<f64>,
    betas: Option<(f64, f64)>,
    eps: Option<f64>,
    momentum: Option<f64>,
    maximize: Option<bool>,
}

impl ParamGroup {
    /// A group of the parameters whose dotted name satisfies `rule`.
    pub fn matching(rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        ParamGroup {
            selects: Box::new(rule),
            lr_scale: 1.0,
            lr: None,
            weight_decay: None,
            betas: None,
            eps: None,
            momentum: None,
            maximize: None,
        }
    }

    /// The biases: parameters whose last name component starts with `bias`
    /// (`bias`, `bias_ih_l0`, `rnn.bias_hh_l1_reverse`).
    pub fn biases() -> Self {
        Self::matching(|name| {
            name.rsplit('.')
                .next()
                .is_some_and(|last| last.starts_with("bias"))
        })
    }

    /// This group's learning rate as a multiple of the optimizer's (PyTorch's per-group `lr` is
    /// `lr_scale · lr`); a schedule moves every group by the same factor, except
    /// [`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau), which cuts and floors each group's rate
    /// on its own, as torch's does. Panics unless finite and ≥ 0, as a learning rate must be.
    #[track_caller]
    pub fn lr_scale(mut self, scale: f64) -> Self {
        check_non_negative::<f64>("ParamGroup", "lr_scale", scale);
        self.lr_scale = scale;
        self
    }

    /// This group's weight decay, in place of the optimizer's. Panics unless finite and ≥ 0.
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        check_non_negative::<f64>("ParamGroup", "weight_decay", weight_decay);
        self.weight_decay = Some(weight_decay);
        self
    }

    /// This group's betas, for the Adam family. Panics unless each is in [0, 1).
    #[track_caller]
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        check_beta("ParamGroup", "beta1", beta1);
        check_beta("ParamGroup", "beta2", beta2);
        self.betas = Some((beta1, beta2));
        self
    }

    /// This group's eps, for an optimizer with one. Panics unless finite and > 0.
    #[track_caller]
    pub fn eps(mut self, eps: f64) -> Self {
        check_positive::<f64>("ParamGroup", "eps", eps);
        self.eps = Some(eps);
        self
    }

    /// This group's momentum, for SGD and RMSprop. Panics unless finite and ≥ 0. A schedule
    /// that cycles the momentum ([`CyclicLr`](crate::CyclicLr)) sets the optimizer's own, not
    /// this one.
    #[track_caller]
    pub fn momentum(mut self, momentum: f64) -> Self {
        check_non_negative::<f64>("ParamGroup", "momentum", momentum);
        self.momentum = Some(momentum);
        self
    }

    /// Whether this group's parameters ascend their objective (see each optimizer's
    /// `maximize`).
    pub fn maximize(mut self, maximize: bool) -> Self {
        self.maximize = Some(maximize);
        self
    }
}

impl ParamGroup {
    /// Whether the group sets its own weight decay (which an optimizer without one refuses).
    pub(crate) fn sets_weight_decay(&self) -> bool {
        self.weight_decay.is_some()
    }
}

impl fmt::Debug for ParamGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamGroup")
            .field("lr_scale", &self.lr_scale)
            .field("lr", &self.lr)
            .field("weight_decay", &self.weight_decay)
            .field("betas", &self.betas)
            .field("eps", &self.eps)
            .field("momentum", &self.momentum)
            .field("maximize", &self.maximize)
            .finish_non_exhaustive()
    }
}

/// The learning rate and weight decay every optimizer has, with its parameter groups. The first
/// group that selects a parameter applies to it. Every rate, `lr` and `lr` times each group's
/// scale, is finite and ≥ 0.
#[derive(Debug)]
pub(crate) struct Hyper {
    /// The optimizer's name, for messages.
    optimizer: &'static str,
    pub(crate) lr: f64,
    pub(crate) weight_decay: f64,
    pub(crate) maximize: bool,
    groups: Vec<ParamGroup>,
    /// Which of the options `betas`, `eps` and `momentum` a group may set.
    group_options: &'static [&'static str],
}

impl Hyper {
    /// Panics, at the caller's line, unless `lr` is finite in `F` and ≥ 0.
    #[track_caller]
    pub(crate) fn new<F: Float>(optimizer: &'static str, lr: f64, weight_decay: f64) -> Self {
        check_non_negative::<F>(optimizer, "lr", lr);
        Hyper {
            optimizer,
            lr,
            weight_decay,
            maximize: false,
            groups: Vec::new(),
            group_options: &[],
        }
    }

    /// Lets groups set `options` (of `betas`, `eps` and `momentum`), which the optimizer has.
    pub(crate) fn group_options(mut self, options: &'static [&'static str]) -> Self {
        self.group_options = options;
        self
    }

    /// Panics, at the caller's line, unless `lr` is finite in `F` and ≥ 0 and so is every
    /// group's rate.
    #[track_caller]
    pub(crate) fn set_lr<F: Float>(&mut self, lr: f64) {
        check_non_negative::<F>(self.optimizer, "lr", lr);
        for group in &self.groups {
            self.check_rate::<F>(lr, group);
        }
        self.lr = lr;
        for group in &mut self.groups {
            group.lr = None;
        }
    }

    /// The rate of each group, the default group's first.
    pub(crate) fn group_lrs(&self) -> Vec<f64> {
        let added = self.groups.iter().map(|g| self.rate_of(g));
        std::iter::once(self.lr).chain(added).collect()
    }

    /// The `lr_scale` of each group, the default group's (1) first.
    pub(crate) fn lr_scales(&self) -> Vec<f64> {
        let added = self.groups.iter().map(|g| g.lr_scale);
        std::iter::once(1.0).chain(added).collect()
    }

    /// Panics, at the caller's line, unless `lrs` holds one rate per group, each finite in `F`
    /// and ≥ 0.
    #[track_caller]
    pub(crate) fn set_group_lrs<F: Float>(&mut self, lrs: &[f64]) {
        assert!(
            lrs.len() == self.groups.len() + 1,
            "{}: set_group_lrs takes one rate per parameter group, {} here (the default group \
             and {} added), got {}",
            self.optimizer,
            self.groups.len() + 1,
            self.groups.len(),
            lrs.len()
        );
        for &lr in lrs {
            check_non_negative::<F>(self.optimizer, "a group's lr", lr);
        }
        self.lr = lrs[0];
        for (group, &lr) in self.groups.iter_mut().zip(&lrs[1..]) {
            group.lr = Some(lr);
        }
    }

    /// The group's rate: its own, else the optimizer's times its scale.
    fn rate_of(&self, group: &ParamGroup) -> f64 {
        group.lr.unwrap_or(self.lr * group.lr_scale)
    }

    /// Whether `lr` times every group's scale is finite in `F`.
    fn scaled_rates_finite<F: Float>(&self, lr: f64) -> bool {
        self.groups.iter().all(|g| finite_in::<F>(lr * g.lr_scale))
    }

    /// Panics, at the caller's line, unless the group's weight decay and rate are finite in `F`.
    #[track_caller]
    pub(crate) fn add_group<F: Float>(&mut self, group: ParamGroup) {
        if let Some(wd) = group.weight_decay {
            check_non_negative::<F>(self.optimizer, "a group's weight_decay", wd);
        }
        let set = [
            ("betas", group.betas.is_some()),
            ("eps", group.eps.is_some()),
            ("momentum", group.momentum.is_some()),
        ];
        for (option, _) in set.iter().filter(|(_, set)| *set) {
            assert!(
                self.group_options.contains(option),
                "{optimizer}: a group's {option} is not an option of {optimizer}",
                optimizer = self.optimizer
            );
        }
        if let Some(eps) = group.eps {
            check_positive::<F>(self.optimizer, "a group's eps", eps);
        }
        if let Some(momentum) = group.momentum {
            check_non_negative::<F>(self.optimizer, "a group's momentum", momentum);
        }
        self.check_rate::<F>(self.lr, &group);
        self.groups.push(group);
    }

    /// Panics, at the caller's line, unless `lr` times the group's scale is finite in `F` (both
    /// are finite and ≥ 0, but their product can overflow).
    #[track_caller]
    fn check_rate<F: Float>(&self, lr: f64, group: &ParamGroup) {
        let rate = lr * group.lr_scale;
        assert!(
            finite_in::<F>(rate),
            "{}: lr {lr:e} times a group's lr_scale {:e} is not finite{}",
            self.optimizer,
            group.lr_scale,
            rounding_note::<F>(rate)
        );
    }

    /// What the gradient of the parameter `name` is multiplied by before anything else: -1 to
    /// maximize, else 1 (exact either way, so this is torch's `-grad`).
    pub(crate) fn sign<F: Float>(&self, name: &str) -> F {
        let maximize = self
            .group_of(name)
            .and_then(|g| g.maximize)
            .unwrap_or(self.maximize);
        if maximize {
            -F::ONE
        } else {
            F::ONE
        }
    }

    /// The weight decay `wd` at learning rate `lr` as a step applies it to the parameter `name`:
    /// added to the gradient, or with `decoupled` (AdamW) applied to the weights.
    pub(crate) fn decay<F: Float>(
        &self,
        name: &str,
        lr: f64,
        wd: f64,
        decoupled: bool,
    ) -> Decay<F> {
        Decay {
            sign: self.sign(name),
            l2: (!decoupled && wd != 0.0).then(|| F::from_f64(wd)),
            keep: F::from_f64(if decoupled { 1.0 - lr * wd } else { 1.0 }),
        }
    }

    /// The group that applies to the parameter named `name`, if any.
    fn group_of(&self, name: &str) -> Option<&ParamGroup> {
        self.groups.iter().find(|g| (g.selects)(name))
    }

    /// The betas for the parameter `name`: its group's, else the optimizer's `own`.
    pub(crate) fn betas(&self, name: &str, own: (f64, f64)) -> (f64, f64) {
        self.group_of(name).and_then(|g| g.betas).unwrap_or(own)
    }

    /// The eps for the parameter `name`: its group's, else the optimizer's `own`.
    pub(crate) fn eps(&self, name: &str, own: f64) -> f64 {
        self.group_of(name).and_then(|g| g.eps).unwrap_or(own)
    }

    /// The momentum for the parameter `name`: its group's, else the optimizer's `own`.
    pub(crate) fn momentum(&self, name: &str, own: f64) -> f64 {
        self.group_of(name).and_then(|g| g.momentum).unwrap_or(own)
    }

    /// (lr, weight decay) for the parameter named `name`.
    pub(crate) fn for_param(&self, name: &str) -> (f64, f64) {
        match self.group_of(name) {
            Some(g) => (self.rate_of(g), g.weight_decay.unwrap_or(self.weight_decay)),
            None => (self.lr, self.weight_decay),
        }
    }
}

/// What every rule does to the gradient and weights before its own equations, for one parameter,
/// its constants rounded to `F` once:
///
/// ```text
/// θ ← θ·keep       keep = 1 - lr·λ with decoupled weight decay (AdamW), else 1
/// g ← -g           (with maximize)
/// g ← g + λθ       (coupled weight decay; a multiply-add rounded once)
/// ```
#[derive(Clone, Copy)]
pub(crate) struct Decay<F> {
    /// -1 to maximize, else 1.
    sign: F,
    /// λ, with coupled weight decay.
    l2: Option<F>,
    /// 1 - lr·λ with decoupled weight decay; 1 (which changes nothing) without.
    pub(crate) keep: F,
}

impl<F: Float> Decay<F> {
    /// The gradient the rule's equations see, from the raw `grad` of the weight `theta`.
    #[inline(always)]
    pub(crate) fn grad(self, theta: F, grad: F) -> F {
        let g = grad * self.sign;
        match self.l2 {
            Some(wd) => mul_add(theta, wd, g),
            None => g,
        }
    }
}

/// The parameters of `model` that have a gradient, with their names: what a step updates.
///
/// A parameter listed under two names (a weight tied between two layers) is updated once, under
/// its first name, as PyTorch's `named_parameters` lists it once: its gradient already sums both
/// uses, and a second update would apply it twice.
///
/// Panics if two parameters share a name, since state is keyed by name.
pub(crate) fn with_grads<'m, F: Float>(
    model: &'m dyn Module<F>,
    grads: &'m Grads<F>,
) -> Vec<(String, &'m Param<F>, &'m Tensor<F>)> {
    let params = model.params();
    // Sorted lists rather than sets: two allocations a step, not one per parameter.
    let mut names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        panic!(
            "optimizer: two parameters are named `{}`; state is keyed by name",
            pair[0]
        );
    }
    // Each parameter's first listing, found by sorting positions by (id, position).
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_unstable_by_key(|&i| (params[i].1.id(), i));
    let mut first = vec![false; params.len()];
    for (k, &i) in order.iter().enumerate() {
        first[i] = k == 0 || params[order[k - 1]].1.id() != params[i].1.id();
    }
    params
        .into_iter()
        .zip(first)
        .filter(|(_, first)| *first)
        .filter_map(|((name, p), _)| grads.get(p).map(|g| (name, p, g)))
        .collect()
}

/// An optimizer's state: hyperparameters and step counts as numbers, buffers as tensors, both
/// keyed by name (`lr`, `<param>.step`, `<param>.exp_avg`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimState<F: Float = f32> {
    /// Which optimizer wrote it (`sgd`, `adam`, `adamw`, `adagrad`, `rmsprop`, `adamax`,
    /// `nadam`, `nadamw`, `radam`, `radamw`, `adadelta`, `rprop`, `asgd`).
    pub kind: String,
    /// Numbers by name.
    pub scalars: BTreeMap<String, f64>,
    /// Buffers by name.
    pub tensors: BTreeMap<String, Tensor<F>>,
}

impl<F: Float> OptimState<F> {
    pub(crate) fn new(kind: &str) -> Self {
        OptimState {
            kind: kind.into(),
            scalars: BTreeMap::new(),
            tensors: BTreeMap::new(),
        }
    }

    /// Writes the state as a safetensors file (buffers as tensors, numbers in the metadata),
    /// atomically.
    pub fn save(&self, path: &Path) -> Result<(), IoError> {
        let mut file = TensorFile {
            tensors: self.tensors.clone(),
            ..TensorFile::default()
        };
        file.metadata.insert("optimizer".into(), self.kind.clone());
        for (k, v) in &self.scalars {
            // `{:e}` of an f64 round-trips exactly through parse.
            file.metadata
                .insert(format!("scalar.{k}"), format!("{v:e}"));
        }
        save_tensors(path, &file)
    }

    /// Reads a state written by [`save`](OptimState::save).
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let file = load_tensors::<F>(path).map_err(StateError::Io)?;
        let kind = file
            .metadata
            .get("optimizer")
            .cloned()
            .ok_or_else(|| StateError::NotAnOptimizerState(path.display().to_string()))?;
        let mut state = OptimState::new(&kind);
        state.tensors = file.tensors;
        for (k, v) in &file.metadata {
            if let Some(name) = k.strip_prefix("scalar.") {
                let value = v.parse().map_err(|_| StateError::BadScalar {
                    name: name.into(),
                    value: v.clone(),
                })?;
                state.scalars.insert(name.into(), value);
            }
        }
        Ok(state)
    }

    pub(crate) fn scalar(&self, name: &str) -> Result<f64, StateError> {
        self.scalars
            .get(name)
            .copied()
            .ok_or_else(|| StateError::Missing(name.into()))
    }

    pub(crate) fn check_kind(&self, kind: &str) -> Result<(), StateError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(StateError::WrongKind {
                expected: kind.into(),
                found: self.kind.clone(),
            })
        }
    }
}

/// Why an optimizer state could not be loaded.
#[derive(Debug)]
pub enum StateError {
    /// The file could not be read.
    Io(IoError),
    /// The file has no `optimizer` entry in its metadata.
    NotAnOptimizerState(String),
    /// The state was written by another kind of optimizer.
    WrongKind {
        /// This optimizer's kind.
        expected: String,
        /// The state's kind.
        found: String,
    },
    /// A number the optimizer needs is missing.
    Missing(String),
    /// A number in the metadata does not parse.
    BadScalar {
        /// Its name.
        name: String,
        /// The text found.
        value: String,
    },
    /// A number or a buffer holds what no run can be resumed from.
    Invalid {
        /// The entry.
        name: String,
        /// What it holds.
        found: String,
        /// What it must hold.
        expected: &'static str,
    },
    /// The state holds parameters the model does not have.
    UnknownParams(Vec<String>),
    /// An entry that is not a buffer this optimizer keeps for a parameter with a step count.
    Unexpected {
        /// The entry.
        name: String,
        /// This optimizer's kind.
        kind: String,
    },
    /// A buffer's shape differs from what this optimizer expects.
    Shape {
        /// The buffer.
        name: String,
        /// The shape this optimizer expects.
        expected: Vec<usize>,
        /// The shape in the state.
        found: Vec<usize>,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io(e) => write!(f, "{e}"),
            StateError::NotAnOptimizerState(path) => {
                write!(
                    f,
                    "{path} holds no optimizer state (no `optimizer` metadata entry)"
                )
            }
            StateError::WrongKind { expected, found } => {
                write!(f, "optimizer state is for {found}, not {expected}")
            }
            StateError::Missing(name) => write!(f, "optimizer state lacks `{name}`"),
            StateError::BadScalar { name, value } => {
                write!(f, "optimizer state: `{name}` = {value:?} is not a number")
            }
            StateError::Invalid {
                name,
                found,
                expected,
            } => write!(
                f,
                "optimizer state: `{name}` is {found}, expected {expected}"
            ),
            StateError::UnknownParams(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                write!(
                    f,
                    "optimizer state is for parameters the model does not have: {}",
                    names.join(", ")
                )
            }
            StateError::Unexpected { name, kind } => write!(
                f,
                "optimizer state: `{name}` is not a buffer {kind} keeps for a parameter with a \
                 step count"
            ),
            StateError::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "optimizer state: `{name}` has shape {found:?}, expected {expected:?}"
            ),
        }
    }
}

impl std::error::Error for StateError {}

/// Per-parameter buffers of one optimizer, keyed by parameter name, with their save and load.
#[derive(Clone, Debug, Default)]
pub(crate) struct Buffers<F: Float> {
    pub(crate) by_param: BTreeMap<String, ParamBuffers<F>>,
}

/// One parameter's step count and named buffers (`exp_avg`, `momentum_buffer`, ...).
#[derive(Clone, Debug, Default)]
pub(crate) struct ParamBuffers<F: Float> {
    pub(crate) step: u64,
    pub(crate) tensors: BTreeMap<&'static str, Tensor<F>>,
}

impl<F: Float> ParamBuffers<F> {
    /// The buffers of the parameter `param` that are wanted, each `(name, wanted)`, in that
    /// order (`None` where not wanted). Each is created full of `init` the first time.
    ///
    /// Panics if a loaded buffer's shape differs from the parameter's: the state was saved for
    /// another model (which [`Optimizer::load_state_for`] refuses).
    pub(crate) fn buffers<const N: usize>(
        &mut self,
        wanted: [(&'static str, bool); N],
        param: &Tensor<F>,
        init: F,
    ) -> [Option<&mut [F]>; N] {
        for (name, _) in wanted.iter().filter(|(_, w)| *w) {
            let t = self
                .tensors
                .entry(name)
                .or_insert_with(|| Tensor::full(param.shape(), init));
            assert_eq!(
                t.shape(),
                param.shape(),
                "optimizer buffer `{name}` has shape {:?} but its parameter has shape {:?}: the state was saved for another model",
                t.shape(),
                param.shape()
            );
        }
        let mut out: [Option<&mut [F]>; N] = std::array::from_fn(|_| None);
        for (name, t) in self.tensors.iter_mut() {
            if let Some(i) = wanted.iter().position(|(n, w)| n == name && *w) {
                out[i] = Some(t.data_mut());
            }
        }
        out
    }
}

impl<F: Float> Buffers<F> {
    pub(crate) fn get(&mut self, param: &str) -> &mut ParamBuffers<F> {
        // Looked up first, so that a step after the first allocates no key.
        if !self.by_param.contains_key(param) {
            self.by_param
                .insert(param.to_string(), ParamBuffers::default());
        }
        self.by_param.get_mut(param).expect("inserted above")
    }

    /// The state of an optimizer of `kind` with these buffers and learning rate `lr`.
    pub(crate) fn state(&self, kind: &str, lr: f64) -> OptimState<F> {
        let mut s = OptimState::new(kind);
        s.scalars.insert("lr".into(), lr);
        self.save(&mut s);
        s
    }

    /// Restores the learning rate and the buffers of `layout` from a state of `kind`, checked as
    /// [`Optimizer::load_state`] says, and with `model` as [`Optimizer::load_state_for`] says;
    /// on error nothing changes.
    pub(crate) fn restore(
        &mut self,
        state: &OptimState<F>,
        kind: &str,
        layout: Layout,
        hyper: &mut Hyper,
        model: Option<&dyn Module<F>>,
    ) -> Result<(), StateError> {
        state.check_kind(kind)?;
        let lr = state.scalar("lr")?;
        if !(lr >= 0.0 && finite_in::<F>(lr)) {
            return Err(StateError::Invalid {
                name: "lr".into(),
                found: lr.to_string(),
                expected: "a finite number >= 0",
            });
        }
        if !hyper.scaled_rates_finite::<F>(lr) {
            return Err(StateError::Invalid {
                name: "lr".into(),
                found: lr.to_string(),
                expected: "a rate that stays finite times each group's lr_scale",
            });
        }
        let shapes = model.map(|m| {
            m.params()
                .into_iter()
                .map(|(name, p)| (name, p.value().shape().to_vec()))
                .collect()
        });
        *self = self.load(state, kind, layout, shapes.as_ref())?;
        hyper.set_lr::<F>(lr);
        Ok(())
    }

    fn save(&self, state: &mut OptimState<F>) {
        for (param, b) in &self.by_param {
            state.scalars.insert(format!("{param}.step"), b.step as f64);
            for (name, t) in &b.tensors {
                state.tensors.insert(format!("{param}.{name}"), t.clone());
            }
        }
    }

    /// Rebuilds the buffers of `layout` from a state of `kind`, checking each step count, each
    /// buffer's name and values, and each buffer's shape: against its parameter's in
    /// `model_shapes` (by name) if given, else against the shape its parameter's buffers have
    /// here (if any) and in the state.
    fn load(
        &self,
        state: &OptimState<F>,
        kind: &str,
        layout: Layout,
        model_shapes: Option<&BTreeMap<String, Vec<usize>>>,
    ) -> Result<Self, StateError> {
        let mut out = Buffers::default();
        let mut unknown = Vec::new();
        for (key, &step) in &state.scalars {
            let Some(param) = key.strip_suffix(".step") else {
                continue;
            };
            // Up to 2^53 an f64 holds every whole number, so the count was saved exactly, and
            // adding steps to it cannot overflow a u64.
            if !((0.0..=MAX_STEP).contains(&step) && step.fract() == 0.0) {
                return Err(StateError::Invalid {
                    name: key.clone(),
                    found: step.to_string(),
                    expected: "a whole number of steps from 0 to 2^53",
                });
            }
            if model_shapes.is_some_and(|shapes| !shapes.contains_key(param)) {
                unknown.push(param.to_string());
            }
            let b = ParamBuffers {
                step: step as u64,
                tensors: BTreeMap::new(),
            };
            out.by_param.insert(param.to_string(), b);
        }
        if !unknown.is_empty() {
            return Err(StateError::UnknownParams(unknown));
        }
        for (key, t) in &state.tensors {
            let unexpected = || StateError::Unexpected {
                name: key.clone(),
                kind: kind.into(),
            };
            let (param, name) = key.rsplit_once('.').ok_or_else(unexpected)?;
            let name = *layout
                .names()
                .find(|&&n| n == name)
                .ok_or_else(unexpected)?;
            let b = out.by_param.get_mut(param).ok_or_else(unexpected)?;
            let expected = if layout.numbers().any(|&n| n == name) {
                (t.numel() != 1).then(Vec::new)
            } else {
                let shape = match model_shapes {
                    Some(shapes) => shapes.get(param).map(Vec::as_slice),
                    None => self
                        .by_param
                        .get(param)
                        .and_then(|here| layout.shape_of(here))
                        .or_else(|| layout.shape_of(b)),
                };
                shape
                    .filter(|&shape| shape != t.shape())
                    .map(<[usize]>::to_vec)
            };
            if let Some(expected) = expected {
                return Err(StateError::Shape {
                    name: key.clone(),
                    expected,
                    found: t.shape().to_vec(),
                });
            }
            let first = |bad: fn(F) -> bool| t.data().iter().position(|&x| bad(x));
            let invalid = |found: String, expected| StateError::Invalid {
                name: key.clone(),
                found,
                expected,
            };
            if let Some(i) = first(|x| !x.is_finite()) {
                let found = format!("{} at element {i}", t.data()[i]);
                return Err(invalid(found, "finite numbers"));
            }
            if layout.never_negative.contains(&name) {
                if let Some(i) = first(|x| x < F::ZERO) {
                    let found = format!("{} at element {i}", t.data()[i]);
                    return Err(invalid(found, "numbers >= 0"));
                }
            }
            if layout.fractions.contains(&name) && first(|x| x > F::ONE || x < F::ZERO).is_some() {
                return Err(invalid(t.data()[0].to_string(), "a number from 0 to 1"));
            }
            if layout.rates.contains(&name) && first(|x| x < F::ZERO).is_some() {
                return Err(invalid(t.data()[0].to_string(), "a number >= 0"));
            }
            b.tensors.insert(name, t.clone());
        }
        Ok(out)
    }
}

/// The largest step count a state may hold: 2^53, up to which an f64 holds every whole number.
const MAX_STEP: f64 = 9_007_199_254_740_992.0;

/// The buffers an optimizer keeps for each parameter, by name, and what each may hold: all hold
/// finite numbers.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    /// With the parameter's shape, of either sign (first moments, momentum).
    pub(crate) signed: &'static [&'static str],
    /// With the parameter's shape, ≥ 0 (sums and averages of squares, whose square root a step
    /// takes, and Adamax's infinity norm).
    pub(crate) never_negative: &'static [&'static str],
    /// One number from 0 to 1 (NAdam's product of momentum coefficients, each below 1; ASGD's
    /// averaging weight μ).
    pub(crate) fractions: &'static [&'static str],
    /// One number ≥ 0 (ASGD's step size η).
    pub(crate) rates: &'static [&'static str],
}

impl Layout {
    fn names(&self) -> impl Iterator<Item = &&'static str> {
        self.per_element().chain(self.numbers())
    }

    /// The buffers that hold one number.
    fn numbers(&self) -> impl Iterator<Item = &&'static str> {
        self.fractions.iter().chain(self.rates)
    }

    fn per_element(&self) -> impl Iterator<Item = &&'static str> {
        self.signed.iter().chain(self.never_negative)
    }

    /// The shape of one of `b`'s buffers that have their parameter's shape, if it has one.
    fn shape_of<'b, F: Float>(&self, b: &'b ParamBuffers<F>) -> Option<&'b [usize]> {
        self.per_element()
            .find_map(|name| b.tensors.get(name))
            .map(Tensor::shape)
    }
}
