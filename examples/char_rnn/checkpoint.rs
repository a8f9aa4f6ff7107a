//! One checkpoint file per run: the model's weights under PyTorch's names (`embed.weight`,
//! `rnn.weight_ih_l0`, `head.weight`, ...), the optimizer's buffers (`optimizer.*`), the carried
//! state (`carry.*`), and in the metadata the vocabulary, the hyperparameters, the progress and
//! checksums, including a hash of the training text. A run writes through a new temporary file
//! and a rename, holding its path's lock (lock.rs); a file is read as untrusted input, every field
//! checked.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::str::FromStr;

use clap::ValueEnum;
use rewind::autograd::io::{load_tensors, save_tensors, TensorFile};
use rewind::autograd::Tensor;
use rewind::nn::{state_dict, Carry, Module};
use rewind::optim::{OptimState, WeightAverage};

use super::cli::{human, CellKind, Hyper, OptimKind, ScheduleKind};
use super::memory;
use super::Error;

/// The format written. Version 2 added settings a version-1 reader would not know and so would
/// silently drop on resuming (`run.head_dropout`, `run.input_dropout`, `run.ema` and the
/// `average.*` tensors): such a reader refuses a version-2 file by its `format` instead.
const FORMAT: &str = "rewind-char-rnn/2";

/// The formats read: version 1 files lack the settings version 2 added, read as their defaults.
const READ: [&str; 2] = ["rewind-char-rnn/1", FORMAT];

/// The version number of a `format` string ("rewind-char-rnn/2" is 2), if it is one of ours.
fn version(format: &str) -> Option<u32> {
    format.strip_prefix("rewind-char-rnn/")?.parse().ok()
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Optimizer steps taken.
    pub step: usize,
    /// The stream position of the next chunk.
    pub position: usize,
    /// Passes over the training text completed.
    pub epoch: usize,
}

/// Everything a checkpoint holds.
pub struct Saved {
    /// Model and training settings.
    pub hyper: Hyper,
    /// The vocabulary, in token order.
    pub vocab: Vec<char>,
    /// Where the run stood.
    pub progress: Progress,
    /// Model weights by PyTorch name.
    pub weights: BTreeMap<String, Tensor>,
    /// Optimizer state.
    pub optimizer: OptimState,
    /// The state carried into the next chunk.
    pub carry: Carry,
    /// The [`text_hash`] of the text it was trained on; `None` in a checkpoint from before it
    /// was recorded.
    pub text_hash: Option<u64>,
    /// With `--ema`: the updates averaged and the average of each weight, by PyTorch name
    /// (`average.*` in the file); none without it, or before the first step.
    pub average: Option<(u64, BTreeMap<String, Tensor>)>,
}

impl Saved {
    /// The weights to evaluate, sample and score with: the average when the run kept one, else
    /// the weights as trained.
    pub fn scored_weights(&self) -> &BTreeMap<String, Tensor> {
        match &self.average {
            Some((_, average)) => average,
            None => &self.weights,
        }
    }
}

/// Writes a checkpoint.
pub fn save(path: &Path, s: &SaveParts<'_>) -> Result<(), Error> {
    let mut file = TensorFile::<f32> {
        tensors: state_dict(s.model),
        ..Default::default()
    };
    for (name, t) in &s.optimizer.tensors {
        file.tensors.insert(format!("optimizer.{name}"), t.clone());
    }
    if let Some(average) = s.average.filter(|a| a.count() > 0) {
        for (name, t) in average.weights() {
            file.tensors.insert(format!("average.{name}"), t.clone());
        }
        file.metadata
            .insert("run.averaged".into(), average.count().to_string());
    }
    file.tensors.insert("carry.h".into(), s.carry.h().clone());
    if let Some(c) = s.carry.c() {
        file.tensors.insert("carry.c".into(), c.clone());
    }
    let m = &mut file.metadata;
    m.insert("format".into(), FORMAT.into());
    m.insert("vocab".into(), s.vocab.iter().collect());
    m.insert(TEXT_HASH.into(), hex(s.text_hash));
    let h = s.hyper;
    for (k, v) in [
        ("cell", name_of(&h.cell)),
        ("layers", h.layers.to_string()),
        ("hidden", h.hidden.to_string()),
        ("embed", h.embed.to_string()),
        ("dropout", h.dropout.to_string()),
        ("head_dropout", h.head_dropout.to_string()),
        ("input_dropout", h.input_dropout.to_string()),
        ("seq_len", h.seq_len.to_string()),
        ("batch", h.batch.to_string()),
        ("lr", h.lr.to_string()),
        ("optim", name_of(&h.optim)),
        ("clip", h.clip.to_string()),
        ("bptt", name_of(&h.bptt)),
        ("seed", h.seed.to_string()),
        ("schedule", name_of(&h.schedule)),
        ("min_lr", h.min_lr.to_string()),
        ("warmup", h.warmup.to_string()),
        ("beta2", h.beta2.to_string()),
        ("weight_decay", h.weight_decay.to_string()),
        ("ema", h.ema.to_string()),
        (
            "forget_bias",
            h.forget_bias.map_or("none".into(), |b| b.to_string()),
        ),
        ("step", s.progress.step.to_string()),
        ("position", s.progress.position.to_string()),
        ("epoch", s.progress.epoch.to_string()),
    ] {
        m.insert(format!("run.{k}"), v);
    }
    m.insert("optimizer.kind".into(), s.optimizer.kind.clone());
    for (k, v) in &s.optimizer.scalars {
        m.insert(format!("optimizer.scalar.{k}"), v.to_string());
    }
    seal(&mut file);
    save_tensors(path, &file)
        .map_err(|e| Error::Checkpoint(format!("cannot save the checkpoint: {e}")))
}

/// What [`save`] writes.
pub struct SaveParts<'a> {
    /// Settings.
    pub hyper: &'a Hyper,
    /// Vocabulary.
    pub vocab: &'a [char],
    /// Progress.
    pub progress: Progress,
    /// The model.
    pub model: &'a dyn Module,
    /// Its optimizer's state.
    pub optimizer: &'a OptimState,
    /// The carried state.
    pub carry: &'a Carry,
    /// The [`text_hash`] of the training text.
    pub text_hash: u64,
    /// The weights' average, with `--ema`.
    pub average: Option<&'a WeightAverage>,
}

fn name_of<E: ValueEnum>(e: &E) -> String {
    e.to_possible_value()
        .expect("every variant has a name")
        .get_name()
        .to_string()
}

/// Adds the checksums [`verify`] checks: `checksum.tensor.<name>` for each tensor (its shape and
/// its f32 bytes), and `checksum.metadata` for every other metadata entry.
fn seal(file: &mut TensorFile) {
    let sums: Vec<(String, String)> = file
        .tensors
        .iter()
        .map(|(name, t)| (format!("checksum.tensor.{name}"), hex(tensor_checksum(t))))
        .collect();
    let metadata = hex(metadata_checksum(&file.metadata));
    file.metadata.extend(sums);
    file.metadata.insert("checksum.metadata".into(), metadata);
}

/// Checks the checksums [`seal`] wrote; `Ok(false)` if the file has none (it was written before
/// they were added). The error names what is damaged.
fn verify(file: &TensorFile) -> Result<bool, String> {
    let mut keys = file
        .metadata
        .keys()
        .filter_map(|k| k.strip_prefix("checksum."))
        .peekable();
    if keys.peek().is_none() {
        return Ok(false);
    }
    for key in keys {
        let known = key == "metadata"
            || key
                .strip_prefix("tensor.")
                .is_some_and(|name| file.tensors.contains_key(name));
        if !known {
            return Err(format!("`checksum.{key}` belongs to no tensor of the file"));
        }
    }
    let check = |key: &str, computed: u64, what: &str| match file.metadata.get(key) {
        None => Err(format!("{what} has no checksum: `{key}` is missing")),
        Some(stored) if *stored == hex(computed) => Ok(()),
        Some(stored) => Err(format!(
            "{what} fails its checksum (stored {stored}, computed {}): the file is damaged",
            hex(computed)
        )),
    };
    check(
        "checksum.metadata",
        metadata_checksum(&file.metadata),
        "the metadata",
    )?;
    for (name, t) in &file.tensors {
        check(
            &format!("checksum.tensor.{name}"),
            tensor_checksum(t),
            &format!("tensor `{name}`"),
        )?;
    }
    Ok(true)
}

fn tensor_checksum(t: &Tensor) -> u64 {
    let mut h = FNV_OFFSET;
    for &d in t.shape() {
        h = fnv1a(h, &(d as u64).to_le_bytes());
    }
    for &x in t.data() {
        h = fnv1a(h, &x.to_le_bytes());
    }
    h
}

/// Over every entry but the checksums, in key order; 0xff (never in UTF-8) ends each string.
fn metadata_checksum(metadata: &BTreeMap<String, String>) -> u64 {
    metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("checksum."))
        .fold(FNV_OFFSET, |h, (k, v)| {
            let h = fnv1a(fnv1a(h, k.as_bytes()), &[0xff]);
            fnv1a(fnv1a(h, v.as_bytes()), &[0xff])
        })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit: each byte is xored in, then the state multiplied by an odd prime. Both steps
/// are one-to-one, so any change to a single byte changes the result; it guards against damage,
/// not against forgery.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The metadata entry of the training text's hash.
const TEXT_HASH: &str = "text.fnv1a64";

/// A text's FNV-1a hash: what tells a resumed run that its text is not the one the checkpoint
/// was trained on.
pub fn text_hash(text: &str) -> u64 {
    fnv1a(FNV_OFFSET, text.as_bytes())
}

fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

/// Reads a checkpoint written by [`save`], trusting nothing in it: the checksums, then every
/// setting by the rules of its flag, every size against the tensors that carry it (before
/// anything of that size is allocated), every tensor's shape and finiteness, and the optimizer's
/// state for every parameter. An error names the file and the field.
pub fn load(path: &Path) -> Result<Saved, Error> {
    let fail = |what: String| Error::Checkpoint(format!("{}: {what}", path.display()));
    check_loadable(path).map_err(fail)?;
    let file = load_tensors::<f32>(path).map_err(|e| Error::Checkpoint(e.to_string()))?;
    let format = file.metadata.get("format").map_or("none", String::as_str);
    if !READ.contains(&format) {
        let newer = version(format)
            .zip(version(FORMAT))
            .is_some_and(|(v, ours)| v > ours);
        return Err(fail(match newer {
            true => format!(
                "`format` is {format:?}, from a newer char_rnn: this one reads {}; update rewind to resume it",
                READ.map(|f| format!("{f:?}")).join(" and ")
            ),
            false => format!(
                "not a char_rnn checkpoint: `format` is {format:?}, expected {FORMAT:?}"
            ),
        }));
    }
    if !verify(&file).map_err(fail)? {
        super::tell(
            "note",
            &format!(
                "{} has no checksums (it predates them): damage to it cannot be detected",
                path.display()
            ),
        );
    }
    read(file).map_err(fail)
}

/// Before a checkpoint is read whole: it is a file (a device such as /dev/zero would be read
/// until memory ran out), and it fits in memory twice over, as its bytes and as tensors.
fn check_loadable(path: &Path) -> Result<(), String> {
    let Ok(meta) = fs::metadata(path) else {
        // Missing or unreadable: the reader says which.
        return Ok(());
    };
    if !meta.is_file() {
        return Err("is not a file: a checkpoint is a file char_rnn wrote".into());
    }
    let (limit, source) = memory::limit();
    match meta.len().checked_mul(2) {
        Some(need) if need <= limit => Ok(()),
        _ => Err(format!(
            "is {}: reading it needs about twice that in memory, but at most {} is available ({source})",
            human(meta.len()),
            human(limit)
        )),
    }
}

fn read(file: TensorFile) -> Result<Saved, String> {
    let meta = Meta(&file.metadata);
    let hyper = Hyper {
        cell: meta.choice("run.cell")?,
        layers: meta.number("run.layers")?,
        hidden: meta.number("run.hidden")?,
        embed: meta.number("run.embed")?,
        dropout: meta.number("run.dropout")?,
        seq_len: meta.number("run.seq_len")?,
        batch: meta.number("run.batch")?,
        lr: meta.number("run.lr")?,
        optim: meta.choice("run.optim")?,
        clip: meta.number("run.clip")?,
        bptt: meta.choice("run.bptt")?,
        seed: meta.number("run.seed")?,
        // Checkpoints from before these settings existed trained with their defaults.
        schedule: meta.choice_or("run.schedule", ScheduleKind::Constant)?,
        min_lr: meta.number_or("run.min_lr", 1e-4)?,
        warmup: meta.number_or("run.warmup", 0)?,
        beta2: meta.number_or("run.beta2", 0.999)?,
        weight_decay: meta.number_or("run.weight_decay", 0.0)?,
        head_dropout: meta.number_or("run.head_dropout", 0.0)?,
        input_dropout: meta.number_or("run.input_dropout", 0.0)?,
        ema: meta.number_or("run.ema", 0.0)?,
        forget_bias: match meta.0.get("run.forget_bias").map(String::as_str) {
            None | Some("none") => None,
            Some(_) => Some(meta.number("run.forget_bias")?),
        },
    };
    check_settings(&hyper)?;
    let progress = Progress {
        step: meta.number("run.step")?,
        position: meta.number("run.position")?,
        epoch: meta.number("run.epoch")?,
    };
    let text = meta.get("vocab")?;
    let vocab: Vec<char> = text.chars().collect();
    if vocab.is_empty() || vocab.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "`vocab` is {text:?}, expected a text's characters: sorted, each once, at least one"
        ));
    }
    let text_hash = match meta.0.get(TEXT_HASH) {
        None => None,
        Some(v) => match u64::from_str_radix(v, 16) {
            Ok(h) if v.len() == 16 => Some(h),
            _ => {
                return Err(format!(
                    "`{TEXT_HASH}` is {v:?}, expected 16 hexadecimal digits"
                ))
            }
        },
    };
    check_sizes(&hyper, vocab.len(), &file.tensors)?;
    for (name, t) in &file.tensors {
        if let Some(i) = t.data().iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "`{name}` holds {} at index {i}: expected finite numbers",
                t.data()[i]
            ));
        }
    }
    let mut tensors = file.tensors;
    let h = tensors
        .remove("carry.h")
        .expect("check_sizes found `carry.h`");
    let carry = Carry::from_parts(
        std::iter::once(h)
            .chain(tensors.remove("carry.c"))
            .collect(),
    );
    let mut weights = BTreeMap::new();
    let mut buffers = BTreeMap::new();
    let mut averages = BTreeMap::new();
    for (name, t) in tensors {
        if let Some(buffer) = name.strip_prefix("optimizer.") {
            buffers.insert(buffer.to_string(), t);
        } else if let Some(weight) = name.strip_prefix("average.") {
            averages.insert(weight.to_string(), t);
        } else {
            weights.insert(name, t);
        }
    }
    let averaged: u64 = meta.number_or("run.averaged", 0)?;
    let average = match (hyper.ema > 0.0, averaged, averages.is_empty()) {
        (_, 0, true) => None,
        (true, n, false) if n > 0 => Some((n, averages)),
        (false, ..) => {
            return Err(
                "`run.ema` is 0 but the file holds a weight average (`average.*` or `run.averaged`): expected none"
                    .to_string(),
            )
        }
        (true, n, _) => {
            return Err(format!(
                "`run.averaged` is {n} but the file holds {} `average.*` tensors: expected both or neither",
                averages.len()
            ))
        }
    };
    let optimizer = read_optimizer(&meta, &hyper, progress.step, &weights, buffers)?;
    Ok(Saved {
        hyper,
        vocab,
        progress,
        weights,
        optimizer,
        carry,
        text_hash,
        average,
    })
}

/// The metadata, read entry by entry; an error names the entry and what it should be.
struct Meta<'a>(&'a BTreeMap<String, String>);

impl Meta<'_> {
    fn get(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("`{key}` is missing"))
    }

    fn number<T: FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|_| format!("`{key}` is {v:?}, expected a number"))
    }

    /// [`Meta::number`], or `default` where the entry is absent.
    fn number_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.0.contains_key(key) {
            true => self.number(key),
            false => Ok(default),
        }
    }

    /// [`Meta::choice`], or `default` where the entry is absent.
    fn choice_or<E: ValueEnum>(&self, key: &str, default: E) -> Result<E, String> {
        match self.0.contains_key(key) {
            true => self.choice(key),
            false => Ok(default),
        }
    }

    fn choice<E: ValueEnum>(&self, key: &str) -> Result<E, String> {
        let v = self.get(key)?;
        E::from_str(v, false).map_err(|_| {
            let names: Vec<String> = E::value_variants().iter().map(name_of).collect();
            format!("`{key}` is {v:?}, expected one of {}", names.join(", "))
        })
    }
}

/// The training flags' rules, applied to the settings of a file, in the type each is used in:
/// the learning rate reaches the optimizers as an f32.
fn check_settings(h: &Hyper) -> Result<(), String> {
    h.check_values().map_err(|b| {
        format!(
            "`run.{}` is {}: it {} (the rule of --{})",
            b.name,
            b.value,
            b.reason,
            b.name.replace('_', "-")
        )
    })
}

/// Each size of the settings against the tensors that carry it, before a model of that size is
/// built: a forged `run.hidden` or `run.layers` cannot make a loader allocate more than the file
/// holds. The remaining weights' names and shapes are checked when they are loaded into a model.
fn check_sizes(h: &Hyper, vocab: usize, tensors: &BTreeMap<String, Tensor>) -> Result<(), String> {
    let expect = |name: &str, shape: &[usize], because: &str| match tensors.get(name) {
        None => Err(format!(
            "`{name}` is missing, but {because} call for it as {shape:?}"
        )),
        Some(t) if t.shape() != shape => Err(format!(
            "`{name}` is {:?}, but {because} make it {shape:?}",
            t.shape()
        )),
        Some(_) => Ok(()),
    };
    let absent = |name: &str, because: &str| {
        if tensors.contains_key(name) {
            Err(format!("`{name}` is present, but {because}"))
        } else {
            Ok(())
        }
    };
    let (v, hidden, layers) = (vocab, h.hidden, h.layers);
    expect(
        "head.weight",
        &[v, hidden],
        &format!("`vocab` ({v} characters) and `run.hidden` ({hidden})"),
    )?;
    match h.embed {
        0 => absent("embed.weight", "`run.embed` is 0 (one-hot input)")?,
        e => expect(
            "embed.weight",
            &[v, e],
            &format!("`vocab` ({v} characters) and `run.embed` ({e})"),
        )?,
    }
    let gates = match h.cell {
        CellKind::Rnn => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    };
    let cell = name_of(&h.cell);
    expect(
        &format!("rnn.weight_hh_l{}", layers - 1),
        &[gates * hidden, hidden],
        &format!("`run.cell` ({cell}, {gates} gates), `run.layers` ({layers}) and `run.hidden` ({hidden})"),
    )?;
    absent(
        &format!("rnn.weight_hh_l{layers}"),
        &format!("`run.layers` is {layers}"),
    )?;
    let state = [layers, h.batch, hidden];
    let because = format!(
        "`run.layers` ({layers}), `run.batch` ({}) and `run.hidden` ({hidden})",
        h.batch
    );
    expect("carry.h", &state, &because)?;
    match h.cell {
        CellKind::Lstm => expect("carry.c", &state, &because),
        _ => absent(
            "carry.c",
            &format!("`run.cell` is {cell}, which carries no cell state"),
        ),
    }
}

/// The optimizer's state, checked against the model's weights: the kind of `run.optim`, finite
/// numbers, each buffer shaped as its parameter, and after the first step every parameter's step
/// count and buffers (a missing one would silently restart that parameter's statistics).
fn read_optimizer(
    meta: &Meta<'_>,
    h: &Hyper,
    step: usize,
    weights: &BTreeMap<String, Tensor>,
    buffers: BTreeMap<String, Tensor>,
) -> Result<OptimState, String> {
    let kind = meta.get("optimizer.kind")?;
    let expected = name_of(&h.optim);
    if kind != expected {
        return Err(format!(
            "`optimizer.kind` is {kind:?}, but `run.optim` is {expected}"
        ));
    }
    let wanted: &[&str] = match h.optim {
        OptimKind::Adam | OptimKind::Adamw => &["exp_avg", "exp_avg_sq"],
        OptimKind::Sgd => &[],
        OptimKind::Adagrad => &["sum"],
        OptimKind::Rmsprop => &["square_avg"],
    };
    let mut scalars = BTreeMap::new();
    for (key, v) in meta.0 {
        let Some(name) = key.strip_prefix("optimizer.scalar.") else {
            continue;
        };
        let value: f64 = meta.number(key)?;
        let per_param = name
            .strip_suffix(".step")
            .filter(|p| weights.contains_key(*p));
        let ok = match (name, per_param) {
            ("lr", _) => value > 0.0 && (value as f32).is_finite(),
            (_, Some(_)) => value.fract() == 0.0 && (1.0..=step as f64).contains(&value),
            _ => return Err(format!("`{key}` belongs to no parameter of the model")),
        };
        if !ok {
            let expected = match name {
                "lr" => "a positive number within f32's range".to_string(),
                _ => format!("a whole number from 1 to `run.step` ({step})"),
            };
            return Err(format!("`{key}` is {v}, expected {expected}"));
        }
        scalars.insert(name.to_string(), value);
    }
    if !scalars.contains_key("lr") {
        return Err("`optimizer.scalar.lr` is missing".into());
    }
    for (name, t) in &buffers {
        let param = name
            .rsplit_once('.')
            .filter(|(_, b)| wanted.contains(b))
            .and_then(|(p, _)| weights.get_key_value(p));
        let Some((param, w)) = param else {
            return Err(format!(
                "`optimizer.{name}` is no {kind} buffer of a parameter of the model"
            ));
        };
        if t.shape() != w.shape() {
            return Err(format!(
                "`optimizer.{name}` is {:?}, expected {:?}, the shape of `{param}`",
                t.shape(),
                w.shape()
            ));
        }
        if !scalars.contains_key(&format!("{param}.step")) {
            return Err(format!(
                "`optimizer.scalar.{param}.step` is missing, but `optimizer.{name}` is present"
            ));
        }
    }
    if step > 0 {
        for param in weights.keys() {
            let count = format!("{param}.step");
            if !scalars.contains_key(&count) {
                return Err(format!(
                    "`optimizer.scalar.{count}` is missing after {step} steps: `{param}`'s optimizer state would restart"
                ));
            }
            for b in wanted {
                if !buffers.contains_key(&format!("{param}.{b}")) {
                    return Err(format!(
                        "`optimizer.{param}.{b}` is missing after {step} steps: `{param}`'s optimizer state would restart"
                    ));
                }
            }
        }
    }
    Ok(OptimState {
        kind: kind.to_string(),
        scalars,
        tensors: buffers,
    })
}
