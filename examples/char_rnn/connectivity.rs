//! What the model remembers, after Distill's "Visualizing memorization in RNNs": for the prediction
//! at position t, the norm of its loss's gradient with respect to the input of each character of
//! the text, drawn as a strip over the text
//! (`char_rnn connectivity --checkpoint m.safetensors --text "..." --at 40 --out c.svg`).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rewind::autograd::io::write_atomic;
use rewind::autograd::{Tape, Tensor, Var};
use rewind::nn::Run;

use super::cli::ConnectivityConfig;
use super::data::Corpus;
use super::figure::{self, Area, Drawn};
use super::model::CharModel;
use super::output::Output;
use super::sample::{check_fed, load_model};
use super::Error;

/// What one prediction reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Strip {
    /// The position t of the last character read: the prediction is of character t + 1.
    pub at: usize,
    /// loss_t = −ln p(character t + 1 | characters 0..=t), in nats.
    pub loss: f32,
    /// ‖∂loss_t/∂x_s‖₂ for each position s of the text, x_s being the vector the recurrent stack
    /// reads at s (an embedding row, or a one-hot vector); exactly 0 for every s > t.
    pub norms: Vec<f64>,
}

/// `connectivity`: loads the checkpoint, draws the strip of each prediction of `c.at` into
/// `c.out`, and prints the norms nearest each prediction.
pub fn run(c: &ConnectivityConfig) -> Result<Vec<Strip>, Error> {
    let (saved, model) = load_model(&c.checkpoint)?;
    let tokens = Corpus::encode(&saved.vocab, &c.text).map_err(|ch| {
        Error::Usage(format!(
            "--text contains {ch:?}, which is not in the checkpoint's vocabulary of {} characters",
            saved.vocab.len()
        ))
    })?;
    check_fed("--text", &saved.hyper, &saved.vocab, &c.text)?;
    let strips = strips(&model, &tokens, &c.at)
        .map_err(|m| Error::Checkpoint(format!("{}: {m}", c.checkpoint.display())))?;
    let text: Vec<char> = c.text.chars().collect();
    draw(&text, &strips, &c.out).map_err(Error::Metrics)?;
    let mut out = Output::default();
    for s in &strips {
        out.line(summary(&text, s));
    }
    out.line(format_args!(
        "drew {} strip{} into {}",
        strips.len(),
        if strips.len() == 1 { "" } else { "s" },
        c.out.display()
    ));
    match out.failed() {
        Some(e) => Err(Error::Output(format!(
            "cannot write the connectivity to standard output: {e}"
        ))),
        None => Ok(strips),
    }
}

/// The strip of each prediction t of `at` (each below `tokens.len() - 1`), the model reading
/// `tokens` in one lane from a zero state in evaluation mode: one forward pass over the whole
/// text, one backward pass per prediction. The error names a position whose logits overflow f32.
pub fn strips(model: &CharModel, tokens: &[usize], at: &[usize]) -> Result<Vec<Strip>, String> {
    let x = inputs(model, tokens);
    let found = gradients(model, &x, tokens, at)?;
    Ok(at
        .iter()
        .zip(found)
        .map(|(&t, (loss, g))| Strip {
            at: t,
            loss,
            norms: norms(&g),
        })
        .collect())
}

/// The vectors x [T, 1, E] the recurrent stack reads for `tokens` in one lane: embedding rows, or
/// one-hot vectors (E = V) for a model without an embedding.
pub fn inputs(model: &CharModel, tokens: &[usize]) -> Tensor {
    let tape = Tape::new();
    model.inputs(&tape, tokens, tokens.len(), 1).value()
}

/// For each prediction t of `at`: loss_t, the cross-entropy of `tokens[t + 1]` under the logits at
/// t when the stack reads the inputs `x` [T, 1, E], and ∂loss_t/∂x [T, 1, E].
pub fn gradients(
    model: &CharModel,
    x: &Tensor,
    tokens: &[usize],
    at: &[usize],
) -> Result<Vec<(f32, Tensor)>, String> {
    let tape = Tape::new();
    let x = tape.var(x.clone());
    let losses = predictions(model, x, tokens, at)?;
    // No gradient reaches the steps after t but zeros (the readout's rows of them), and each op's
    // backward of zeros through finite values is zeros: their rows of ∂loss_t/∂x are exactly 0,
    // not merely small. (Non-finite logits, where 0·∞ would be NaN, were refused above.)
    Ok(losses
        .into_iter()
        .map(|loss| {
            let grads = loss.backward();
            let g = grads.wrt(x).expect("every loss reads the first input");
            (loss.item(), g.clone())
        })
        .collect())
}

/// loss_t for each t of `at`, recorded after one forward pass over all of `x`.
fn predictions<'t>(
    model: &CharModel,
    x: Var<'t>,
    tokens: &[usize],
    at: &[usize],
) -> Result<Vec<Var<'t>>, String> {
    let tape = x.tape();
    let steps = tokens.len();
    model.set_training(false);
    let state = model.zero_carry(1).on(tape);
    let (logits, _) = model.logits_of(tape, x, steps, 1, state, &Run::default());
    model.set_training(true);
    let values = logits.value();
    let vocab = values.shape()[1];
    if let Some(i) = values.data().iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "the logits at position {} are not finite ({}): the weights are finite but too large, and overflow f32",
            i / vocab,
            values.data()[i]
        ));
    }
    Ok(at
        .iter()
        .map(|&t| logits.narrow(0, t, 1).cross_entropy(&[tokens[t + 1]]))
        .collect())
}

/// The L2 norm of each position's row of a gradient [T, 1, E], summed in f64.
pub fn norms(g: &Tensor) -> Vec<f64> {
    let width = g.shape()[2];
    g.data()
        .chunks(width)
        .map(|row| {
            row.iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// How many characters a summary line lists, ending at the last one read.
const LISTED: usize = 8;

/// `t 41 predicts 'e' (loss 1.234 nats); gradient norms of the last 8 characters read: 't' 3.1e-2  ...`
fn summary(text: &[char], s: &Strip) -> String {
    let from = (s.at + 1).saturating_sub(LISTED);
    let listed: Vec<String> = (from..=s.at)
        .map(|i| format!("{:?} {:.1e}", text[i], s.norms[i]))
        .collect();
    format!(
        "t {} predicts {:?} (loss {:.3} nats); gradient norms of the last {} characters read: {}",
        s.at,
        text[s.at + 1],
        s.loss,
        listed.len(),
        listed.join("  ")
    )
}

// The layout, in pixels: a margin around the figure, the title and legend above the strips, then
// per strip its caption, its lines of characters and a gap.
const MARGIN: i32 = 20;
const HEADER: i32 = 84;
const CAPTION: i32 = 26;
const GAP: i32 = 14;
/// A character's cell, width and height in pixels.
const CELL: (i32, i32) = (16, 22);
/// Characters a line of a strip holds.
const PER_LINE: usize = 64;
/// The narrowest figure, in characters, so that the legend fits.
const NARROWEST: usize = 48;
/// The decades below a strip's largest norm that its shades span.
const DECADES: f64 = 3.0;

/// Writes the strips over `text` as an SVG at `out`, through a temporary file and a rename. The
/// error is one line.
pub fn draw(text: &[char], strips: &[Strip], out: &Path) -> Result<(), String> {
    let lines = text.len().div_ceil(PER_LINE) as i32;
    let per_strip = CAPTION + lines * CELL.1 + GAP;
    let width = 2 * MARGIN + CELL.0 * text.len().clamp(NARROWEST, PER_LINE) as i32;
    let height = HEADER + per_strip * strips.len() as i32 + MARGIN;
    let svg = figure::svg((width as u32, height as u32), |root| {
        header(root)?;
        for (k, s) in strips.iter().enumerate() {
            strip(root, text, s, HEADER + k as i32 * per_strip)?;
        }
        Ok(())
    });
    write_atomic(out, svg.as_bytes()).map_err(|e| format!("cannot write the connectivity: {e}"))
}

/// The title, and the legend of the shades and of the frame.
fn header(root: &Area) -> Drawn {
    let title = "What each prediction reads: ‖∂loss_t/∂x_s‖ for every character s of the text";
    root.draw(&Text::new(
        title,
        (MARGIN, 18),
        figure::text("sans-serif", 15.0),
    ))?;
    let small = figure::text("sans-serif", 12.0);
    let y = 44;
    let steps = 10;
    for k in 0..steps {
        let x = MARGIN + k * CELL.0;
        let shade = 0.05 + 0.95 * k as f64 / (steps - 1) as f64;
        root.draw(&Rectangle::new(
            [(x, y - 8), (x + CELL.0, y + 8)],
            tint(shade).filled(),
        ))?;
    }
    let after = MARGIN + steps * CELL.0 + 8;
    let scale = format!(
        "log scale per strip: darkest = its largest norm, palest ≤ 1/{:.0} of it; white = exactly 0",
        10f64.powf(DECADES)
    );
    root.draw(&Text::new(scale, (after, y), small.clone()))?;
    let y = 66;
    root.draw(&Rectangle::new(
        [(MARGIN, y - 8), (MARGIN + CELL.0, y + 8)],
        figure::SERIES[1].stroke_width(2),
    ))?;
    let frame = "the character predicted (t + 1); t counts from 0";
    root.draw(&Text::new(frame, (MARGIN + CELL.0 + 8, y), small))?;
    Ok(())
}

/// One prediction's caption and its shaded text, from `top` down.
fn strip(root: &Area, text: &[char], s: &Strip, top: i32) -> Drawn {
    let largest = s.norms.iter().copied().fold(0.0, f64::max);
    let caption = format!(
        "t = {}: predicting {:?} (loss {:.3} nats); largest norm {:.2e}",
        s.at,
        text[s.at + 1],
        s.loss,
        largest
    );
    let y = top + CAPTION / 2;
    root.draw(&Text::new(
        caption,
        (MARGIN, y),
        figure::text("sans-serif", 13.0),
    ))?;
    let glyphs = TextStyle::from(("monospace", 13.0 * 1.24).into_font())
        .pos(Pos::new(HPos::Center, VPos::Center));
    for (i, &c) in text.iter().enumerate() {
        let x = MARGIN + (i % PER_LINE) as i32 * CELL.0;
        let y = top + CAPTION + (i / PER_LINE) as i32 * CELL.1;
        let corners = [(x, y), (x + CELL.0, y + CELL.1)];
        let shade = shade(s.norms[i], largest);
        root.draw(&Rectangle::new(corners, tint(shade).filled()))?;
        if c != ' ' {
            let ink = if shade > 0.6 { WHITE } else { BLACK };
            let centre = (x + CELL.0 / 2, y + CELL.1 / 2);
            root.draw(&Text::new(glyph(c), centre, glyphs.clone().color(&ink)))?;
        }
        if i == s.at + 1 {
            root.draw(&Rectangle::new(corners, figure::SERIES[1].stroke_width(2)))?;
        }
    }
    Ok(())
}

/// How dark a norm is drawn, from 0 (white) to 1: on a log scale over [`DECADES`] decades up to
/// the strip's `largest`, and never white unless the norm is exactly 0.
fn shade(norm: f64, largest: f64) -> f64 {
    if norm <= 0.0 || largest <= 0.0 {
        return 0.0;
    }
    let position = 1.0 + (norm / largest).log10() / DECADES;
    position.clamp(0.05, 1.0)
}

/// White blended toward the first series colour by `shade`.
fn tint(shade: f64) -> RGBColor {
    let RGBColor(r, g, b) = figure::SERIES[0];
    let mix = |c: u8| (255.0 - (255.0 - f64::from(c)) * shade).round() as u8;
    RGBColor(mix(r), mix(g), mix(b))
}

/// A character as a strip shows it: a newline as ↵, a tab as ⇥, another control character as ·.
fn glyph(c: char) -> String {
    match c {
        '\n' => "↵".into(),
        '\t' => "⇥".into(),
        c if c.is_control() => "·".into(),
        c => c.to_string(),
    }
}
