//! char_rnn's training recipe (issue 32): a learning rate warmed up and decayed along half a
//! cosine over the run's budget, AdamW with its β2, the LSTM forget gate's initial bias, and
//! dropout on the first layer's input and on the readout's. Each
//! setting reaches the model or the optimizer, is saved in the checkpoint so that a resumed run
//! goes on as an uninterrupted one, and a setting out of range is a one-line error.

use crate::char_rnn_app as app;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::char_rnn::{args, binary, scratch_dir, small_run as small, tiny_text};
use app::checkpoint;
use app::cli::{Hyper, ScheduleKind};
use app::model::{CharModel, Stack};
use app::train::{mix, scheduled_lr, SeedStream};
use app::{run, Error};
use rewind::autograd::io::{load_tensors, save_tensors};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{Tape, Var};
use rewind::nn::{Dropout, Lstm, Module, Run};

fn scratch() -> PathBuf {
    scratch_dir("rewind-char-rnn-recipe")
}

/// The settings a run of `flags` trains with, as its checkpoint holds them.
fn hyper_of(flags: &[&str]) -> Hyper {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("c.safetensors");
    run(small(&data, &ckpt, &[&["--steps", "1"], flags].concat())).unwrap();
    checkpoint::load(&ckpt).unwrap().hyper
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let file = load_tensors::<f32>(path).unwrap();
    file.tensors
        .iter()
        .filter(|(name, _)| !name.starts_with("optimizer.") && !name.starts_with("carry."))
        .map(|(name, t)| (name.clone(), t.data().to_vec()))
        .collect()
}

#[test]
fn the_rate_warms_up_linearly_then_falls_along_half_a_cosine_to_min_lr() {
    let mut h = hyper_of(&["--schedule", "cosine", "--lr", "0.01", "--min-lr", "0.001"]);
    assert_eq!(
        (h.schedule, h.min_lr, h.warmup),
        (ScheduleKind::Cosine, 1e-3, 0)
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs().max(1e-300);
    assert!(close(scheduled_lr(&h, 0, 0.0), 0.01));
    assert!(close(scheduled_lr(&h, 50, 0.5), 0.0055));
    assert!(close(scheduled_lr(&h, 99, 1.0), 0.001));
    // Past the budget (a --minutes run's last step) it stays at the floor.
    assert!(close(scheduled_lr(&h, 99, 1.5), 0.001));
    // A quarter of the way: min + (lr - min)(1 + cos(π/4))/2.
    let quarter = 1e-3 + 9e-3 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
    assert!(close(scheduled_lr(&h, 25, 0.25), quarter));

    h.warmup = 4;
    let warm: Vec<f64> = (0..6).map(|s| scheduled_lr(&h, s, 0.0)).collect();
    for (got, want) in warm.iter().zip([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]) {
        assert!(close(*got, want), "{warm:?}");
    }
    h.schedule = ScheduleKind::Constant;
    assert!(close(scheduled_lr(&h, 70, 0.7), 0.01));
}

#[test]
fn the_metrics_file_records_the_scheduled_rate_of_every_step() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("c.safetensors");
    let flags = ["--steps", "20", "--log-every", "1", "--schedule", "cosine"];
    run(small(
        &data,
        &ckpt,
        &[&flags[..], &["--warmup", "5"]].concat(),
    ))
    .unwrap();
    let h = checkpoint::load(&ckpt).unwrap().hyper;
    let rows = app::metrics::read(&app::metrics::metrics_path(&ckpt)).unwrap();
    assert_eq!(rows.len(), 20);
    for row in rows {
        // Update n (from 1) is taken with the rate of step n - 1 of 20.
        let want = scheduled_lr(&h, row.step - 1, (row.step - 1) as f64 / 20.0);
        let rel = (row.lr - want).abs() / want;
        // The optimizer holds its rate in f32.
        assert!(rel < 1e-6, "step {}: {} against {want}", row.step, row.lr);
    }
}

/// Trains with `flags` for `steps` in one run, and for `half` steps then resumed to `steps` (in
/// `shards`, as a resume is not told the recipe again): the two checkpoints, `<name>-whole` and
/// `<name>-halves`.
fn whole_and_resumed(
    name: &str,
    flags: &[&str],
    half: usize,
    steps: usize,
    shards: usize,
) -> (PathBuf, PathBuf) {
    let dir = scratch();
    let data = tiny_text(&dir);
    let whole = dir.join(format!("{name}-whole.safetensors"));
    let halves = dir.join(format!("{name}-halves.safetensors"));
    let (half, steps, shards) = (half.to_string(), steps.to_string(), shards.to_string());
    for (path, n) in [(&whole, &steps), (&halves, &half)] {
        let extra = [flags, &["--shards", &shards, "--steps", n]].concat();
        run(small(&data, path, &extra)).unwrap();
    }
    let resume = [
        "--data",
        data.to_str().unwrap(),
        "--resume",
        halves.to_str().unwrap(),
        "--steps",
        &steps,
        "--shards",
        &shards,
        "--eval-every",
        "1000",
    ];
    run(args(&resume)).unwrap();
    (whole, halves)
}

#[test]
fn a_recipe_run_resumed_halfway_equals_an_uninterrupted_one() {
    let recipe = [
        "--layers",
        "2",
        "--dropout",
        "0.2",
        "--head-dropout",
        "0.1",
        "--input-dropout",
        "0.15",
        "--optim",
        "adamw",
        "--beta2",
        "0.99",
        "--forget-bias",
        "1",
        "--warmup",
        "4",
        "--ema",
        "0.9",
    ];
    let (whole, halves) = whole_and_resumed("recipe", &recipe, 7, 16, 2);
    // The weights' average (`average.*`) included.
    assert_eq!(weights(&whole), weights(&halves));
    let average = checkpoint::load(&halves).unwrap().average.unwrap();
    assert_eq!(average.0, 16, "one update per step");
    let saved = checkpoint::load(&halves).unwrap().hyper;
    assert_eq!(saved.weight_decay, 0.01, "AdamW's default decay");
    assert_eq!(saved.forget_bias, Some(1.0));
    assert_eq!(saved.head_dropout, 0.1);
    assert_eq!(saved.input_dropout, 0.15);
    assert_eq!(saved.ema, 0.9);
}

/// `--ema D`: each step's trained weights go into an exponential average after the optimizer's
/// update (the first copied), saved beside them; validation, `eval` and `sample` read the
/// average.
#[test]
fn the_ema_averages_each_steps_trained_weights_and_is_what_validation_scores() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let (first, second) = (dir.join("ema-1.safetensors"), dir.join("ema-2.safetensors"));
    run(small(&data, &first, &["--steps", "1", "--ema", "0.75"])).unwrap();
    std::fs::copy(&first, &second).unwrap();
    let resumed = [
        "--data",
        data.to_str().unwrap(),
        "--resume",
        second.to_str().unwrap(),
        "--steps",
        "2",
    ];
    let val_loss = match run(args(&resumed)).unwrap() {
        app::Outcome::Trained { val_loss, .. } => val_loss,
        other => panic!("{other:?}"),
    };
    let (one, two) = (
        checkpoint::load(&first).unwrap(),
        checkpoint::load(&second).unwrap(),
    );
    let (count, average_one) = one.average.clone().unwrap();
    assert_eq!(count, 1);
    assert_eq!(
        average_one, one.weights,
        "the first update copies the weights"
    );
    let (count, average_two) = two.average.clone().unwrap();
    assert_eq!(count, 2);
    for (name, trained) in &two.weights {
        let (a, b) = (average_one[name].data(), trained.data());
        // lerp(a, b, 0.25): the product by a power of two is exact, so one rounding.
        let want: Vec<f32> = a.iter().zip(b).map(|(&a, &b)| a + 0.25 * (b - a)).collect();
        assert_eq!(average_two[name].data(), &want[..], "{name}");
        assert_ne!(
            average_two[name].data(),
            b,
            "{name}: the average is not the weights"
        );
    }

    // What the run reported, what `eval` scores, and the average's own score agree; the trained
    // weights score otherwise.
    let evaluated = ["eval", "--checkpoint", second.to_str().unwrap(), "--data"];
    let evaluated = [&evaluated[..], &[data.to_str().unwrap()]].concat();
    let scores = match run(args(&evaluated)).unwrap() {
        app::Outcome::Evaluated(scores) => scores,
        other => panic!("{other:?}"),
    };
    assert_eq!(scores.static_loss, val_loss);
    let corpus = app::data::Corpus::load(Some(&data)).unwrap();
    let h = &two.hyper;
    let score = |weights| {
        let model = app::train::restore_model(h, &two.vocab, weights, &second).unwrap();
        app::train::evaluate(&model, &corpus.val, h.batch, h.seq_len)
    };
    assert_eq!(score(&average_two), val_loss);
    assert_ne!(score(&two.weights), val_loss);
}

/// Unsharded, the input's and the head's masks come from the model's own generators, reseeded
/// every step from the run's seed: a resumed one-layer run draws what an uninterrupted one
/// draws, whichever way it backpropagates through time.
#[test]
fn input_and_head_dropout_on_one_tape_resume_as_an_uninterrupted_run() {
    for bptt in ["truncated", "random", "full"] {
        let flags = [
            "--head-dropout",
            "0.3",
            "--input-dropout",
            "0.2",
            "--bptt",
            bptt,
        ];
        let (whole, halves) = whole_and_resumed(&format!("one-tape-{bptt}"), &flags, 5, 10, 1);
        assert_eq!(weights(&whole), weights(&halves), "--bptt {bptt}");
    }
}

/// 5 steps of 3 lanes of tokens below `vocab`, time-major: what the dropout tests feed.
fn dropout_probe(vocab: usize) -> (usize, usize, Vec<usize>) {
    let (steps, lanes) = (5, 3);
    (
        steps,
        lanes,
        (0..steps * lanes).map(|i| (i * 5) % vocab).collect(),
    )
}

/// `m`'s logits for time-major `tokens` in `lanes` lanes from a zero state, in training or in
/// evaluation, with its dropout reseeded from 7.
fn seeded_logits(m: &CharModel, tokens: &[usize], lanes: usize, training: bool) -> Vec<f32> {
    m.set_training(training);
    m.reseed_dropout(7);
    let tape = Tape::new();
    let state = m.zero_carry(lanes).on(&tape);
    let steps = tokens.len() / lanes;
    let (y, _) = m.logits(&tape, tokens, steps, lanes, state, &Run::default());
    m.set_training(true);
    y.value().data().to_vec()
}

/// The LSTM stack of `m` (char_rnn's default cell).
fn lstm(m: &CharModel) -> &Lstm {
    match &m.rnn {
        Stack::Lstm(s) => s,
        _ => unreachable!("char_rnn's default cell is the LSTM"),
    }
}

/// The output of `m`'s stack alone (no dropout before or after it) for time-major `tokens` in
/// `lanes` lanes from a zero state, recorded on `tape`.
fn stack_output<'t>(m: &CharModel, tape: &'t Tape, tokens: &[usize], lanes: usize) -> Var<'t> {
    let steps = tokens.len() / lanes;
    let state = m.zero_carry(lanes).on(tape);
    let x = m.inputs(tape, tokens, steps, lanes);
    lstm(m)
        .forward_with(tape, x, Some(state), &Run::default())
        .output
}

/// Dropout before the head is on in training and off in evaluation, and in training it is the
/// head applied to the stack's output times a mask of its own stream, scaled by 1/(1 - p).
#[test]
fn head_dropout_masks_the_readout_input_in_training_only() {
    let mut h = hyper_of(&["--layers", "2"]);
    h.dropout = 0.5;
    let vocab = 14;
    let plain = CharModel::new(&h, vocab, &mut StdRng::seed_from_u64(0));
    h.head_dropout = 0.5;
    let dropped = CharModel::new(&h, vocab, &mut StdRng::seed_from_u64(0));
    let (steps, lanes, tokens) = dropout_probe(vocab);
    let logits = |m: &CharModel, training: bool| seeded_logits(m, &tokens, lanes, training);
    assert_eq!(logits(&plain, false), logits(&dropped, false));
    let trained = logits(&dropped, true);
    assert_ne!(
        logits(&plain, true),
        trained,
        "head dropout changed nothing"
    );

    // The same by hand: the stack (its own masks, from the stream `reseed_dropout` gives it),
    // then a mask from the head's stream, then the head.
    dropped.reseed_dropout(7);
    let tape = Tape::new();
    let top = stack_output(&dropped, &tape, &tokens, lanes);
    let mask = Dropout::new(0.5, 0);
    mask.reseed(mix(7, SeedStream::HeadDropout as u64));
    let by_hand = dropped
        .head
        .forward(&tape, mask.forward(&tape, top))
        .reshape(&[steps * lanes, vocab]);
    assert_eq!(by_hand.value().data(), &trained[..]);
}

/// On one tape the dropout between the stack's layers draws from a stream of its own, not from
/// the step's seed itself, which also draws the update's windows and the driver's random chunk
/// lengths: masks from that stream would be functions of those draws.
#[test]
fn the_stacks_dropout_draws_from_a_stream_of_its_own() {
    let mut h = hyper_of(&["--layers", "2"]);
    h.dropout = 0.5;
    let vocab = 14;
    let model = CharModel::new(&h, vocab, &mut StdRng::seed_from_u64(0));
    let (steps, lanes, tokens) = dropout_probe(vocab);
    let trained = seeded_logits(&model, &tokens, lanes, true);

    // By hand: the stack's dropout reseeded from `seed`, the stack, then the head (no other
    // dropout is on).
    let by_hand = |seed: u64| {
        lstm(&model).reseed_dropout(seed);
        let tape = Tape::new();
        let top = stack_output(&model, &tape, &tokens, lanes);
        let y = model
            .head
            .forward(&tape, top)
            .reshape(&[steps * lanes, vocab]);
        y.value().data().to_vec()
    };
    assert_eq!(by_hand(mix(7, SeedStream::StackDropout as u64)), trained);
    assert_ne!(
        by_hand(7),
        trained,
        "the stack's masks are the step seed's own draws"
    );
}

/// Dropout on the stack's input is on in training and off in evaluation, and in training it is
/// the model run on its inputs times a mask of the input's own stream, scaled by 1/(1 - p).
#[test]
fn input_dropout_masks_the_first_layers_input_in_training_only() {
    let mut h = hyper_of(&[]);
    let vocab = 14;
    let plain = CharModel::new(&h, vocab, &mut StdRng::seed_from_u64(0));
    h.input_dropout = 0.5;
    let dropped = CharModel::new(&h, vocab, &mut StdRng::seed_from_u64(0));
    let (steps, lanes, tokens) = dropout_probe(vocab);
    let logits = |m: &CharModel, training: bool| seeded_logits(m, &tokens, lanes, training);
    assert_eq!(logits(&plain, false), logits(&dropped, false));
    let trained = logits(&dropped, true);
    assert_eq!(
        logits(&plain, true),
        logits(&plain, false),
        "one layer, no dropout"
    );
    assert_ne!(
        logits(&plain, true),
        trained,
        "input dropout changed nothing"
    );

    // The same by hand: the embedding, a mask from the input's stream, then the plain model
    // (nothing else of it drops) on the masked inputs.
    let tape = Tape::new();
    let mask = Dropout::new(0.5, 0);
    mask.reseed(mix(7, SeedStream::InputDropout as u64));
    let x = mask.forward(&tape, dropped.inputs(&tape, &tokens, steps, lanes));
    let state = plain.zero_carry(lanes).on(&tape);
    let (by_hand, _) = plain.logits_of(&tape, x, steps, lanes, state, &Run::default());
    assert_eq!(by_hand.value().data(), &trained[..]);
}

/// The cosine follows the run's --steps in all, so a run stopped by a signal and resumed with
/// the same --steps takes every update an uninterrupted run takes.
#[cfg(unix)]
#[test]
fn a_cosine_run_stopped_by_a_signal_and_resumed_equals_an_uninterrupted_one() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let (whole, stopped) = (
        dir.join("whole.safetensors"),
        dir.join("stopped.safetensors"),
    );
    let recipe = [
        "--steps",
        "400",
        "--schedule",
        "cosine",
        "--warmup",
        "10",
        "--shards",
        "2",
    ];
    let list = small(&data, &stopped, &recipe);
    let mut child = Command::new(binary())
        .args(&list[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = app::metrics::metrics_path(&stopped);
    let started = Instant::now();
    // Stopped once it has taken 20 steps, well before its 400.
    while app::metrics::read(&metrics).map_or(true, |rows| rows.len() < 2) {
        assert!(started.elapsed() < Duration::from_secs(120), "no rows");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(
        child.wait().unwrap().code(),
        Some(130),
        "not stopped by the signal"
    );
    let at = checkpoint::load(&stopped).unwrap().progress.step;
    assert!((20..400).contains(&at), "stopped at {at}");

    let resume = [
        "--data",
        data.to_str().unwrap(),
        "--resume",
        stopped.to_str().unwrap(),
    ];
    run(args(
        &[&resume[..], &["--steps", "400", "--shards", "2"]].concat(),
    ))
    .unwrap();
    run(small(&data, &whole, &recipe)).unwrap();
    assert_eq!(weights(&whole), weights(&stopped), "stopped at step {at}");
}

#[test]
fn adamw_without_decay_is_adam_and_each_setting_changes_the_weights() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let trained = |name: &str, flags: &[&str]| {
        let ckpt = dir.join(name);
        run(small(&data, &ckpt, &[&["--steps", "6"], flags].concat())).unwrap();
        weights(&ckpt)
    };
    let adam = trained("adam.safetensors", &[]);
    let adamw0 = trained(
        "adamw0.safetensors",
        &["--optim", "adamw", "--weight-decay", "0"],
    );
    assert_eq!(adam, adamw0, "AdamW with no decay must take Adam's steps");
    for (name, flags) in [
        ("adamw.safetensors", &["--optim", "adamw"][..]),
        ("beta2.safetensors", &["--beta2", "0.9"][..]),
        ("wd.safetensors", &["--weight-decay", "0.1"][..]),
        ("cosine.safetensors", &["--schedule", "cosine"][..]),
        ("warmup.safetensors", &["--warmup", "3"][..]),
        ("forget.safetensors", &["--forget-bias", "1"][..]),
        ("head.safetensors", &["--head-dropout", "0.3"][..]),
        ("input.safetensors", &["--input-dropout", "0.3"][..]),
    ] {
        assert_ne!(adam, trained(name, flags), "{flags:?} changed nothing");
    }
}

#[test]
fn a_forget_bias_starts_every_lstm_forget_gate_at_its_value() {
    let mut h = hyper_of(&["--layers", "2"]);
    h.forget_bias = Some(1.0);
    let model = CharModel::new(&h, 14, &mut StdRng::seed_from_u64(0));
    let hidden = h.hidden;
    let mut seen = 0;
    for (name, p) in model.params() {
        let forget = || p.value().data()[hidden..2 * hidden].to_vec();
        if name.starts_with("rnn.bias_ih") {
            let forget = forget();
            assert!(forget.iter().all(|&b| b == 1.0), "{name}: {forget:?}");
            seen += 1;
        } else if name.starts_with("rnn.bias_hh") {
            let forget = forget();
            assert!(forget.iter().all(|&b| b == 0.0), "{name}: {forget:?}");
            seen += 1;
        }
    }
    assert_eq!(seen, 4, "two layers' b_ih and b_hh");
}

#[test]
fn a_checkpoint_from_before_the_recipe_settings_resumes_with_their_defaults() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("old.safetensors");
    run(small(&data, &ckpt, &["--steps", "2"])).unwrap();
    let mut old = load_tensors::<f32>(&ckpt).unwrap();
    let recipe = [
        "schedule",
        "min_lr",
        "warmup",
        "beta2",
        "weight_decay",
        "forget_bias",
        "head_dropout",
        "input_dropout",
        "ema",
    ];
    old.metadata.retain(|k, _| {
        !k.starts_with("checksum.") && !recipe.iter().any(|r| *k == format!("run.{r}"))
    });
    // Written before version 2 added the dropouts and the average.
    assert_eq!(old.metadata["format"], "rewind-char-rnn/2");
    old.metadata
        .insert("format".into(), "rewind-char-rnn/1".into());
    save_tensors(&ckpt, &old).unwrap();
    let h = checkpoint::load(&ckpt).unwrap().hyper;
    assert_eq!(
        (
            h.schedule,
            h.min_lr,
            h.warmup,
            h.beta2,
            h.weight_decay,
            h.forget_bias,
            h.head_dropout,
            h.input_dropout,
            h.ema
        ),
        (
            ScheduleKind::Constant,
            1e-4,
            0,
            0.999,
            0.0,
            None,
            0.0,
            0.0,
            0.0
        )
    );
    let resume = [
        "--data",
        data.to_str().unwrap(),
        "--resume",
        ckpt.to_str().unwrap(),
    ];
    run(args(
        &[&resume[..], &["--steps", "4", "--eval-every", "1000"]].concat(),
    ))
    .unwrap();
    assert_eq!(checkpoint::load(&ckpt).unwrap().progress.step, 4);
}

#[test]
fn recipe_settings_out_of_range_are_one_line_errors_naming_the_flag() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("c.safetensors");
    for (flags, says) in [
        (
            &["--forget-bias", "1", "--cell", "gru"][..],
            "--forget-bias 1 needs --cell lstm",
        ),
        (
            &["--forget-bias", "inf"][..],
            "--forget-bias inf must be finite",
        ),
        (&["--beta2", "1"][..], "--beta2 1 must be in [0, 1)"),
        (
            &["--head-dropout", "1"][..],
            "--head-dropout 1 must be in [0, 1)",
        ),
        (
            &["--head-dropout", "-0.1"][..],
            "--head-dropout -0.1 must be in [0, 1)",
        ),
        (
            &["--input-dropout", "1"][..],
            "--input-dropout 1 must be in [0, 1)",
        ),
        (&["--ema", "1"][..], "--ema 1 must be in [0, 1)"),
        (&["--ema", "-0.5"][..], "--ema -0.5 must be in [0, 1)"),
        (
            &["--beta2", "0.9", "--optim", "sgd"][..],
            "--beta2 0.9 is Adam's",
        ),
        (
            &["--weight-decay", "-1"][..],
            "--weight-decay -1 must be 0 or positive",
        ),
        (
            &["--schedule", "cosine", "--min-lr", "0.1"][..],
            "--min-lr 0.1 must be from 0 to --lr",
        ),
        (&["--min-lr", "-1"][..], "--min-lr -1 must be from 0"),
    ] {
        match run(small(&data, &ckpt, flags)) {
            Err(Error::Usage(m)) => assert!(m.starts_with(says) && !m.contains('\n'), "{m}"),
            other => panic!("{flags:?}: {other:?}"),
        }
    }
    assert!(!ckpt.exists());
    // A resumed run keeps its checkpoint's recipe: changing it is refused by name.
    run(small(
        &data,
        &ckpt,
        &["--steps", "1", "--schedule", "cosine"],
    ))
    .unwrap();
    let resume = [
        "--data",
        data.to_str().unwrap(),
        "--resume",
        ckpt.to_str().unwrap(),
    ];
    match run(args(
        &[&resume[..], &["--steps", "2", "--schedule", "constant"]].concat(),
    )) {
        Err(Error::Checkpoint(m)) => assert!(m.starts_with("--schedule differs"), "{m}"),
        other => panic!("{other:?}"),
    }
    match run(args(
        &[&resume[..], &["--steps", "2", "--head-dropout", "0.2"]].concat(),
    )) {
        Err(Error::Checkpoint(m)) => assert!(m.starts_with("--head-dropout differs"), "{m}"),
        other => panic!("{other:?}"),
    }
    match run(args(
        &[&resume[..], &["--steps", "2", "--input-dropout", "0.2"]].concat(),
    )) {
        Err(Error::Checkpoint(m)) => assert!(m.starts_with("--input-dropout differs"), "{m}"),
        other => panic!("{other:?}"),
    }
    match run(args(
        &[&resume[..], &["--steps", "2", "--ema", "0.99"]].concat(),
    )) {
        Err(Error::Checkpoint(m)) => assert!(m.starts_with("--ema differs"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// `--dropout` sits between layers, so with one layer it is said to do nothing, as PyTorch says.
#[test]
fn dropout_with_one_layer_is_warned_about_and_input_or_head_dropout_is_not() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let stderr = |name: &str, flags: &[&str]| {
        let ckpt = dir.join(name);
        let list = small(&data, &ckpt, &[&["--steps", "1"], flags].concat());
        let out = Command::new(binary()).args(&list[1..]).output().unwrap();
        assert!(out.status.success(), "{flags:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let warning = "char_rnn: warning: --dropout 0.2 does nothing with one layer";
    assert!(stderr("one.safetensors", &["--dropout", "0.2"]).contains(warning));
    for (name, flags) in [
        (
            "two.safetensors",
            &["--dropout", "0.2", "--layers", "2"][..],
        ),
        ("head.safetensors", &["--head-dropout", "0.2"][..]),
        ("input.safetensors", &["--input-dropout", "0.2"][..]),
    ] {
        let said = stderr(name, flags);
        assert!(!said.contains("warning"), "{flags:?}: {said}");
    }
}
