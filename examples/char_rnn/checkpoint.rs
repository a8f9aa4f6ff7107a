//! One checkpoint file per run: the model's weights under PyTorch's names (`embed.weight`,
//! `rnn.weight_ih_l0`, `head.weight`, ...), the optimizer's buffers (`optimizer.*`), the carried
//! state (`carry.*`), and in the metadata the vocabulary, the hyperparameters and the progress.
//! Written atomically: a temporary file, then a rename.

use std::collections::BTreeMap;
use std::path::Path;

use clap::ValueEnum;
use rewind::autograd::io::{load_tensors, save_tensors, TensorFile};
use rewind::autograd::Tensor;
use rewind::nn::{state_dict, Carry, Module};
use rewind::optim::OptimState;

use super::cli::Hyper;
use super::Error;

const FORMAT: &str = "rewind-char-rnn/1";

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
    file.tensors.insert("carry.h".into(), s.carry.h.clone());
    if let Some(c) = &s.carry.c {
        file.tensors.insert("carry.c".into(), c.clone());
    }
    let m = &mut file.metadata;
    m.insert("format".into(), FORMAT.into());
    m.insert("vocab".into(), s.vocab.iter().collect());
    let h = s.hyper;
    for (k, v) in [
        ("cell", name_of(h.cell)),
        ("layers", h.layers.to_string()),
        ("hidden", h.hidden.to_string()),
        ("embed", h.embed.to_string()),
        ("dropout", h.dropout.to_string()),
        ("seq_len", h.seq_len.to_string()),
        ("batch", h.batch.to_string()),
        ("lr", h.lr.to_string()),
        ("optim", name_of(h.optim)),
        ("clip", h.clip.to_string()),
        ("bptt", name_of(h.bptt)),
        ("seed", h.seed.to_string()),
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
}

fn name_of<E: ValueEnum>(e: E) -> String {
    e.to_possible_value()
        .expect("every variant has a name")
        .get_name()
        .to_string()
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Saved, Error> {
    let file = load_tensors::<f32>(path).map_err(|e| Error::Checkpoint(e.to_string()))?;
    let bad = |what: &str| {
        Error::Checkpoint(format!(
            "{} is not a char_rnn checkpoint: {what}",
            path.display()
        ))
    };
    if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("no `format` entry saying rewind-char-rnn/1"));
    }
    let meta = |k: &str| {
        file.metadata
            .get(&format!("run.{k}"))
            .ok_or_else(|| bad(&format!("`run.{k}` is missing")))
    };
    let number = |k: &str| -> Result<usize, Error> {
        meta(k)?
            .parse()
            .map_err(|_| bad(&format!("`run.{k}` is not a number")))
    };
    let real = |k: &str| -> Result<f64, Error> {
        meta(k)?
            .parse()
            .map_err(|_| bad(&format!("`run.{k}` is not a number")))
    };
    fn choice<E: ValueEnum>(v: &str) -> Option<E> {
        E::from_str(v, false).ok()
    }
    let hyper = Hyper {
        cell: choice(meta("cell")?).ok_or_else(|| bad("unknown cell"))?,
        layers: number("layers")?,
        hidden: number("hidden")?,
        embed: number("embed")?,
        dropout: real("dropout")?,
        seq_len: number("seq_len")?,
        batch: number("batch")?,
        lr: real("lr")?,
        optim: choice(meta("optim")?).ok_or_else(|| bad("unknown optimizer"))?,
        clip: real("clip")?,
        bptt: choice(meta("bptt")?).ok_or_else(|| bad("unknown bptt"))?,
        seed: meta("seed")?
            .parse()
            .map_err(|_| bad("`run.seed` is not a number"))?,
    };
    let progress = Progress {
        step: number("step")?,
        position: number("position")?,
        epoch: number("epoch")?,
    };
    let vocab: Vec<char> = file
        .metadata
        .get("vocab")
        .ok_or_else(|| bad("no vocabulary"))?
        .chars()
        .collect();
    let mut optimizer = OptimState {
        kind: file
            .metadata
            .get("optimizer.kind")
            .cloned()
            .ok_or_else(|| bad("no optimizer kind"))?,
        scalars: BTreeMap::new(),
        tensors: BTreeMap::new(),
    };
    for (k, v) in &file.metadata {
        if let Some(name) = k.strip_prefix("optimizer.scalar.") {
            let value = v
                .parse()
                .map_err(|_| bad(&format!("`{k}` is not a number")))?;
            optimizer.scalars.insert(name.to_string(), value);
        }
    }
    let mut weights = BTreeMap::new();
    let mut carry_h = None;
    let mut carry_c = None;
    for (name, t) in file.tensors {
        if let Some(rest) = name.strip_prefix("optimizer.") {
            optimizer.tensors.insert(rest.to_string(), t);
        } else if name == "carry.h" {
            carry_h = Some(t);
        } else if name == "carry.c" {
            carry_c = Some(t);
        } else {
            weights.insert(name, t);
        }
    }
    Ok(Saved {
        hyper,
        vocab,
        progress,
        weights,
        optimizer,
        carry: Carry {
            h: carry_h.ok_or_else(|| bad("no carried state"))?,
            c: carry_c,
        },
    })
}
