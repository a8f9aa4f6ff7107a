//! char_rnn's records of a run (issue 34): the metrics file beside the checkpoint continues
//! across resumes without a gap or a repeat and holds only whole lines when the run is killed;
//! the curve is an SVG of every run given; the TensorBoard event file is records of the format
//! (lengths, masked CRC-32C, `Event` protobufs) that TensorBoard's own reader reads; a bad
//! `--tensorboard` path or metrics file is a one-line error naming it.
#![cfg(unix)]

use crate::char_rnn_app as app;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::char_rnn::{args, binary, scratch_dir, tiny_text, train_args};
use app::metrics::{self, Row};
use app::tensorboard::{crc32c, masked_crc32c};
use app::{run, Error, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A directory of this test's own.
fn scratch() -> PathBuf {
    scratch_dir("rewind-metrics")
}

/// A directory of this test's own, the tiny text in it, and a checkpoint path there,
/// `m.safetensors`.
fn setup() -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("m.safetensors");
    (dir, data, ckpt)
}

fn text(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A very small run on `data` saving to `checkpoint` in one shard (so its numbers are the same
/// on every machine), with the flags `extra` added.
fn small(data: &Path, checkpoint: &Path, extra: &[&str]) -> Vec<String> {
    let defaults = [
        ("--data", text(data)),
        ("--checkpoint", text(checkpoint)),
        ("--batch", "2"),
        ("--seq-len", "8"),
        ("--hidden", "8"),
        ("--embed", "4"),
        ("--shards", "1"),
        ("--eval-every", "1000000"),
    ];
    train_args(&defaults, extra)
}

fn steps(rows: &[Row]) -> Vec<usize> {
    rows.iter().map(|r| r.step).collect()
}

/// The columns an uninterrupted run and a resumed one compute alike (not time nor speed).
fn deterministic(r: &Row) -> (usize, f64, f64, Option<f64>, f64, f64, bool) {
    (
        r.step,
        r.train_loss,
        r.train_loss_smooth,
        r.val_loss,
        r.lr,
        r.grad_norm,
        r.clipped,
    )
}

fn one_line_error(list: Vec<String>) -> Error {
    let e = run(list.clone()).expect_err("the run must fail");
    assert_eq!(e.to_string().lines().count(), 1, "{list:?}: {e}");
    e
}

#[test]
fn a_row_is_written_at_each_logged_evaluated_and_saved_step_and_the_last() {
    let (dir, data, ckpt) = setup();
    let extra = [
        "--steps",
        "13",
        "--log-every",
        "4",
        "--eval-every",
        "6",
        "--save-every",
        "5",
    ];
    run(small(&data, &ckpt, &extra)).unwrap();
    let rows = metrics::read(&dir.join("m.safetensors.metrics.csv")).unwrap();
    assert_eq!(steps(&rows), [4, 5, 6, 8, 10, 12, 13]);
    let evaluated: Vec<usize> = rows
        .iter()
        .filter(|r| r.val_loss.is_some())
        .map(|r| r.step)
        .collect();
    assert_eq!(
        evaluated,
        [6, 12, 13],
        "validation at each evaluation and the end"
    );
    for r in &rows {
        assert_eq!(r.lr, 2e-3);
        assert!(
            r.train_loss > 0.0 && r.grad_norm > 0.0 && r.elapsed >= 0.0,
            "{r:?}"
        );
        // Clipped at 5 (the default) only above it.
        assert_eq!(r.clipped, r.grad_norm > 5.0, "{r:?}");
    }
    let curve = fs::read_to_string(dir.join("m.safetensors.curve.svg")).unwrap();
    assert!(curve.starts_with("<svg") && curve.trim_end().ends_with("</svg>"));
    assert!(
        curve.contains("m.safetensors validation"),
        "the legend names the run"
    );
}

// The resume rule: the rows up to the checkpoint's step are kept, the rest (a killed run's, or
// a line cut short) dropped, and the resumed run continues from the next step.
#[test]
fn a_resumed_run_continues_the_metrics_file_without_a_gap_or_a_repeat() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let (whole, halves) = (
        dir.join("whole.safetensors"),
        dir.join("halves.safetensors"),
    );
    let extra = [
        "--log-every",
        "2",
        "--eval-every",
        "6",
        "--save-every",
        "100",
    ];
    for (ckpt, steps) in [(&whole, "24"), (&halves, "11")] {
        run(small(
            &data,
            ckpt,
            &[&extra[..], &["--steps", steps]].concat(),
        ))
        .unwrap();
    }
    // What a run killed past its checkpoint would have left: rows beyond step 11, the last one
    // cut short.
    let csv = dir.join("halves.safetensors.metrics.csv");
    let mut left = fs::read_to_string(&csv).unwrap();
    left.push_str("12,9.0,1,9,9,,0.002,9,0\n14,9.5,1,9,9,,0.002,9,0\n16,10.0,1,");
    fs::write(&csv, left).unwrap();
    let resume = [
        "--data",
        text(&data),
        "--resume",
        text(&halves),
        "--shards",
        "1",
    ];
    run(args(
        &[&resume[..], &extra[..], &["--steps", "24"]].concat(),
    ))
    .unwrap();

    let resumed = metrics::read(&csv).unwrap();
    let uninterrupted = metrics::read(&dir.join("whole.safetensors.metrics.csv")).unwrap();
    let mut expected = steps(&uninterrupted);
    expected.insert(5, 11);
    assert_eq!(
        steps(&resumed),
        expected,
        "the first run's last step, 11, has its row"
    );
    let same: Vec<_> = resumed
        .iter()
        .filter(|r| r.step != 11)
        .map(deterministic)
        .collect();
    let want: Vec<_> = uninterrupted.iter().map(deterministic).collect();
    assert_eq!(same, want, "the resumed rows are the uninterrupted run's");
    assert!(
        resumed.windows(2).all(|w| w[0].elapsed <= w[1].elapsed),
        "the time goes on from the resumed run's"
    );
}

#[test]
fn resuming_with_a_damaged_metrics_file_is_a_one_line_error_naming_its_line() {
    let (dir, data, ckpt) = setup();
    run(small(&data, &ckpt, &["--steps", "4", "--log-every", "1"])).unwrap();
    let csv = dir.join("m.safetensors.metrics.csv");
    let damaged = fs::read_to_string(&csv)
        .unwrap()
        .replacen("\n2,", "\ntwo,", 1);
    fs::write(&csv, &damaged).unwrap();
    let resume = args(&[
        "--data",
        text(&data),
        "--resume",
        text(&ckpt),
        "--steps",
        "6",
    ]);
    let e = one_line_error(resume);
    assert_eq!(
        e.to_string(),
        format!(
            "{} line 3: step \"two\" is not a whole number: move the file away to resume with a new one",
            csv.display()
        )
    );
    assert_eq!(fs::read_to_string(&csv).unwrap(), damaged, "left as it was");
    assert_eq!(app::checkpoint::load(&ckpt).unwrap().progress.step, 4);
}

// Killed at random moments, resumed each time: every line written is whole, and the steps run
// 1, 2, 3, ... without a gap or a repeat.
#[test]
fn a_killed_run_leaves_only_whole_lines() {
    let (dir, data, ckpt) = setup();
    let csv = dir.join("m.safetensors.metrics.csv");
    let forever = [
        "--steps",
        "100000000",
        "--save-every",
        "3",
        "--log-every",
        "1",
    ];
    let mut rng = StdRng::seed_from_u64(34);
    let mut kills = 0;
    for moment in 0..8 {
        let list = match ckpt.exists() {
            true => args(
                &[
                    &["--data", text(&data), "--resume", text(&ckpt)],
                    &forever[..],
                ]
                .concat(),
            ),
            false => small(&data, &ckpt, &forever),
        };
        let mut child = Command::new(binary())
            .args(&list[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example starts");
        std::thread::sleep(Duration::from_millis(rng.random_range(100..500)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            None,
            "moment {moment}: the run ended by itself"
        );
        let Ok(written) = fs::read_to_string(&csv) else {
            continue;
        };
        kills += 1;
        assert!(
            written.ends_with('\n'),
            "moment {moment}: a line cut short: {written:?}"
        );
        let rows = metrics::read(&csv).unwrap_or_else(|e| panic!("moment {moment}: {e}"));
        assert_eq!(written.lines().count(), rows.len() + 1, "moment {moment}");
        let expected: Vec<usize> = (1..=rows.len()).collect();
        assert_eq!(steps(&rows), expected, "moment {moment}");
    }
    assert!(kills >= 4, "only {kills} runs lived long enough to write");
    let rows = metrics::read(&csv).unwrap();
    assert!(rows.len() > 3, "{} rows", rows.len());
}

// A checkpoint saved on a signal holds a step off the --log-every grid; its row is written, so a
// resumed run continues the smoothed loss from that very step.
#[test]
fn the_step_a_signal_stops_the_run_at_has_its_row() {
    let (dir, data, ckpt) = setup();
    let forever = [
        "--steps",
        "100000000",
        "--log-every",
        "1000000",
        "--save-every",
        "1000000",
    ];
    let mut child = Command::new(binary())
        .args(&small(&data, &ckpt, &forever)[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().starts_with("training a")),
        "the run ended before training"
    );
    std::thread::sleep(Duration::from_millis(200));
    let sent = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    lines.for_each(drop);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let saved = app::checkpoint::load(&ckpt).unwrap().progress.step;
    let rows = metrics::read(&dir.join("m.safetensors.metrics.csv")).unwrap();
    assert_eq!(steps(&rows), [saved], "one row, at the step saved");
}

#[test]
fn the_step_a_closed_standard_output_stops_the_run_at_has_its_row() {
    // `char_rnn | head -1`: the pipe closes once the first line is read, and the next line,
    // step 50's or 100's progress, fails inside a step that --log-every 7 would not log.
    let (dir, data, ckpt) = setup();
    let forever = [
        "--steps",
        "100000000",
        "--log-every",
        "7",
        "--save-every",
        "1000000",
    ];
    let mut child = Command::new(binary())
        .args(&small(&data, &ckpt, &forever)[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("training a"));
    drop(lines);
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let saved = app::checkpoint::load(&ckpt).unwrap().progress.step;
    assert_ne!(
        saved % 7,
        0,
        "stopped at a logged step: the test shows nothing"
    );
    let rows = metrics::read(&dir.join("m.safetensors.metrics.csv")).unwrap();
    assert_eq!(
        rows.last().map(|r| r.step),
        Some(saved),
        "the step saved has its row"
    );
}

#[test]
fn log_every_below_one_is_a_usage_error() {
    let (_, data, ckpt) = setup();
    for bad in ["0", "-1"] {
        let e = one_line_error(small(&data, &ckpt, &["--log-every", bad]));
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        assert!(e.to_string().contains("--log-every"), "{e}");
    }
}

// The records are never lost silently: a write that fails stops the run as a full standard
// output does, saved, with a one-line error saying how to go on.
#[test]
fn a_curve_that_cannot_be_written_stops_the_run_saved() {
    let (dir, data, ckpt) = setup();
    fs::create_dir(dir.join("m.safetensors.curve.svg")).unwrap();
    let e = one_line_error(small(&data, &ckpt, &["--steps", "9", "--eval-every", "3"]));
    assert!(matches!(e, Error::Metrics(_)), "{e:?}");
    let message = e.to_string();
    assert!(message.starts_with("cannot write the curve: "), "{message}");
    let ending = format!(
        ": the run stopped at step 3 and saved {}; resume it with --resume {0}",
        ckpt.display()
    );
    assert!(message.ends_with(&ending), "{message}");
    assert_eq!(app::checkpoint::load(&ckpt).unwrap().progress.step, 3);
    let rows = metrics::read(&dir.join("m.safetensors.metrics.csv")).unwrap();
    assert_eq!(steps(&rows).last(), Some(&3));
}

#[test]
fn a_bad_tensorboard_path_is_a_one_line_error_before_training() {
    let (dir, data, ckpt) = setup();
    let csv = dir.join("m.safetensors.metrics.csv");
    fs::write(&csv, "an earlier run's rows\n").unwrap();
    // A file where the directory should be, and a directory under a file.
    for bad in [data.clone(), data.join("events")] {
        let e = one_line_error(small(
            &data,
            &ckpt,
            &["--tensorboard", text(&bad), "--steps", "2"],
        ));
        let message = e.to_string();
        assert!(matches!(e, Error::Metrics(_)), "{e:?}");
        assert!(
            message.starts_with(&format!("--tensorboard {}: ", bad.display())),
            "{message}"
        );
        assert!(!ckpt.exists(), "no training ran: {message}");
        let left = fs::read_to_string(&csv).unwrap();
        assert_eq!(
            left, "an earlier run's rows\n",
            "the metrics file is left alone"
        );
    }
}

#[test]
fn plotting_a_missing_or_malformed_metrics_file_names_the_file_and_line() {
    let dir = scratch();
    let out = dir.join("curve.svg");
    let plot = |file: &Path| {
        let e = one_line_error(args(&["plot", text(file), "--out", text(&out)]));
        assert!(matches!(e, Error::Metrics(_)), "{e:?}");
        e.to_string()
    };
    let missing = dir.join("missing.metrics.csv");
    let message = plot(&missing);
    assert!(message.starts_with(&format!(
        "cannot read the metrics file {}: ",
        missing.display()
    )));

    let good = "1,0.5,100,2.6,2.6,,0.002,0.3,0\n";
    let cases = [
        ("step,loss\n".to_string(), "line 1: expected the header"),
        (
            format!("{}\n{good}2,x,1,1,1,,1,1,0\n", metrics::HEADER),
            "line 3: elapsed_s \"x\" is not a number",
        ),
        (
            format!("{}\n{good}2,1,1,1\n", metrics::HEADER),
            "line 3: expected 9 comma-separated fields, found 4",
        ),
        (
            format!("{}\n{good}{good}", metrics::HEADER),
            "line 3: step 1 after step 1: the steps must increase",
        ),
        (
            format!("{}\n{good}2,1,1,1,1,,1,1,yes\n", metrics::HEADER),
            "line 3: clipped \"yes\" is not 0 or 1",
        ),
        (String::new(), "line 1: the file has no header"),
    ];
    let bad = dir.join("bad.metrics.csv");
    for (content, expected) in cases {
        fs::write(&bad, &content).unwrap();
        let message = plot(&bad);
        let prefix = format!("{} {expected}", bad.display());
        assert!(message.starts_with(&prefix), "{content:?}: {message}");
    }
    assert!(!out.exists(), "no curve is drawn from a bad file");
}

#[test]
fn plot_overlays_the_runs_of_several_metrics_files() {
    let dir = scratch();
    let data = tiny_text(&dir);
    for cell in ["rnn", "gru"] {
        let ckpt = dir.join(format!("{cell}.safetensors"));
        run(small(
            &data,
            &ckpt,
            &["--cell", cell, "--steps", "8", "--eval-every", "4"],
        ))
        .unwrap();
    }
    let out = dir.join("both.svg");
    let files = [
        dir.join("rnn.safetensors.metrics.csv"),
        dir.join("gru.safetensors.metrics.csv"),
    ];
    let drawn = run(args(&[
        "plot",
        text(&files[0]),
        text(&files[1]),
        "--out",
        text(&out),
    ]))
    .unwrap();
    assert_eq!(drawn, Outcome::Plotted(2));
    let svg = fs::read_to_string(&out).unwrap();
    for name in ["rnn.safetensors", "gru.safetensors"] {
        for series in ["training (smoothed)", "validation"] {
            assert!(svg.contains(&format!("{name} {series}")), "{name} {series}");
        }
    }
}

#[test]
fn plot_against_seconds_places_each_run_by_its_clock_and_against_steps_by_its_steps() {
    // Two runs of the same four steps, one four times slower: 10 s a step against 40.
    let dir = scratch();
    let header =
        "step,elapsed_s,chars_per_s,train_loss,train_loss_smooth,val_loss,lr,grad_norm,clipped";
    let mut files = Vec::new();
    for (name, per_step) in [("fast", 10.0), ("slow", 40.0)] {
        let mut csv = format!("{header}\n");
        for step in 1..=4 {
            let (t, smooth) = (step as f64 * per_step, 3.0 - 0.2 * step as f64);
            csv.push_str(&format!("{step},{t},100,2.0,{smooth},,0.002,0.5,0\n"));
        }
        let file = dir.join(format!("{name}.metrics.csv"));
        fs::write(&file, csv).unwrap();
        files.push(file);
    }
    // The x pixels of the first two series lines (each run's training loss): 1-px lines in a
    // series colour, where the mesh is black.
    let training_xs = |x: &str| -> Vec<Vec<f64>> {
        let out = dir.join(format!("{x}.svg"));
        let list = [
            "plot",
            text(&files[0]),
            text(&files[1]),
            "--x",
            x,
            "--out",
            text(&out),
        ];
        assert_eq!(run(args(&list)).unwrap(), Outcome::Plotted(2));
        let svg = fs::read_to_string(&out).unwrap();
        svg.split("<polyline")
            .skip(1)
            .map(|l| l.split('>').next().unwrap())
            .filter(|l| l.contains("stroke-width=\"1\"") && !l.contains("stroke=\"#000000\""))
            .take(2)
            .map(|l| {
                let points = l
                    .split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                points
                    .split_whitespace()
                    .map(|p| p.split(',').next().unwrap().parse().unwrap())
                    .collect()
            })
            .collect()
    };
    let by_step = training_xs("step");
    assert_eq!(by_step[0], by_step[1], "the same steps at the same places");
    let by_clock = training_xs("seconds");
    let (fast, slow) = (&by_clock[0], &by_clock[1]);
    assert_eq!(
        fast[3], slow[0],
        "the fast run's 40 s is the slow run's first step"
    );
    let ratio = (slow[3] - slow[0]) / (fast[3] - fast[0]);
    assert!(
        (ratio - 4.0).abs() < 0.1,
        "120 s against 30 s drawn {ratio}x as wide"
    );
}

// RFC 3720's test vectors of CRC-32C (iSCSI), and the check value of "123456789".
#[test]
// The mask spelled as TensorFlow spells it, not as the example does.
#[allow(clippy::manual_rotate)]
fn crc32c_matches_its_known_test_vectors_and_the_mask_is_tensorflows() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
    // TensorFlow's lib/hash/crc32c.h: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
    let crc = 0xE306_9283u32;
    assert_eq!(
        masked_crc32c(b"123456789"),
        ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
    );
}

/// A protobuf field's value, by wire type.
#[derive(Debug, PartialEq)]
enum Value {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

/// The fields of a protobuf message, in order, decoded by the wire format alone.
fn fields(mut bytes: &[u8]) -> Vec<(u64, Value)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first().expect("a varint runs past the end");
            *bytes = rest;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return value;
            }
        }
        panic!("a varint longer than 10 bytes")
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut bytes)),
            1 => {
                let (v, rest) = bytes.split_at(8);
                bytes = rest;
                Value::Fixed64(v.try_into().unwrap())
            }
            2 => {
                let len = varint(&mut bytes) as usize;
                let (v, rest) = bytes.split_at(len);
                bytes = rest;
                Value::Bytes(v.to_vec())
            }
            5 => {
                let (v, rest) = bytes.split_at(4);
                bytes = rest;
                Value::Fixed32(v.try_into().unwrap())
            }
            other => panic!("wire type {other}"),
        };
        out.push((key >> 3, value));
    }
    out
}

/// The data of each record of an event file, its length and both masked CRCs checked.
fn records(file: &[u8]) -> Vec<Vec<u8>> {
    let mask = |crc: u32| crc.rotate_right(15).wrapping_add(0xa282_ead8);
    let mut rest = file;
    let mut out = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 12, "a record header cut short");
        let (len_bytes, after) = rest.split_at(8);
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(after[..4].try_into().unwrap());
        assert_eq!(len_crc, mask(crc32c(len_bytes)), "the length's masked CRC");
        let (data, after) = after[4..].split_at(len);
        let data_crc = u32::from_le_bytes(after[..4].try_into().unwrap());
        assert_eq!(data_crc, mask(crc32c(data)), "the data's masked CRC");
        out.push(data.to_vec());
        rest = &after[4..];
    }
    out
}

/// An `Event`: wall time, step, file version, its summary's scalars by tag, and its session
/// log's status.
#[derive(Debug, Default)]
struct Event {
    wall_time: f64,
    step: u64,
    file_version: Option<String>,
    scalars: Vec<(String, f32)>,
    session_status: Option<u64>,
}

fn event(data: &[u8]) -> Event {
    let mut e = Event::default();
    for (field, value) in fields(data) {
        match (field, value) {
            (1, Value::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Value::Varint(v)) => e.step = v,
            (3, Value::Bytes(b)) => e.file_version = Some(String::from_utf8(b).unwrap()),
            (5, Value::Bytes(summary)) => {
                for (field, value) in fields(&summary) {
                    let (1, Value::Bytes(v)) = (field, value) else {
                        panic!("a Summary holds only values (field 1)")
                    };
                    let [(1, Value::Bytes(tag)), (2, Value::Fixed32(x))] = &fields(&v)[..] else {
                        panic!("a Value is a tag (field 1) and a simple_value (field 2)")
                    };
                    let tag = String::from_utf8(tag.clone()).unwrap();
                    e.scalars.push((tag, f32::from_le_bytes(*x)));
                }
            }
            (6, Value::Bytes(log)) => {
                let [(1, Value::Varint(status))] = fields(&log)[..] else {
                    panic!("a SessionLog holds its status (field 1)")
                };
                e.session_status = Some(status);
            }
            (field, value) => panic!("unexpected field {field}: {value:?}"),
        }
    }
    e
}

/// The events of each event file in `dir`, in the order TensorBoard reads the files.
fn event_files(dir: &Path) -> Vec<Vec<Event>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("events.out.tfevents."), "{name}");
            records(&fs::read(file).unwrap())
                .iter()
                .map(|d| event(d))
                .collect()
        })
        .collect()
}

/// The events of the one event file in `dir`.
fn events_in(dir: &Path) -> Vec<Event> {
    let [events] = <[_; 1]>::try_from(event_files(dir)).expect("one event file");
    events
}

// TensorBoard drops the events of steps at and after a session start's step: a resumed run's
// new file says where it starts, so that what a killed run wrote past its checkpoint goes.
#[test]
fn a_resumed_run_starts_a_new_event_file_with_a_session_start_after_its_step() {
    let (dir, data, ckpt) = setup();
    let tb = dir.join("tb");
    let extra = ["--log-every", "2", "--tensorboard", text(&tb)];
    run(small(
        &data,
        &ckpt,
        &[&extra[..], &["--steps", "5"]].concat(),
    ))
    .unwrap();
    let resume = [
        "--data",
        text(&data),
        "--resume",
        text(&ckpt),
        "--steps",
        "8",
    ];
    run(args(&[&resume[..], &extra[..]].concat())).unwrap();
    let files = event_files(&tb);
    assert_eq!(files.len(), 2, "a file per run");
    let steps = |events: &[Event]| -> Vec<u64> {
        events
            .iter()
            .filter(|e| !e.scalars.is_empty())
            .map(|e| e.step)
            .collect()
    };
    assert_eq!(steps(&files[0]), [2, 4, 5]);
    assert_eq!(steps(&files[1]), [6, 8]);
    let [version, start, ..] = &files[1][..] else {
        panic!("{:?}", files[1])
    };
    assert_eq!(version.file_version.as_deref(), Some("brain.Event:2"));
    // SessionLog.START is 1.
    assert_eq!((start.session_status, start.step), (Some(1), 6));
}

#[test]
fn the_event_file_is_records_of_events_holding_the_metrics_rows() {
    let (dir, data, ckpt) = setup();
    let tb = dir.join("tb");
    let extra = [
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--log-every",
        "2",
        "--layers",
        "2",
    ];
    run(small(
        &data,
        &ckpt,
        &[&extra[..], &["--tensorboard", text(&tb)]].concat(),
    ))
    .unwrap();
    let events = events_in(&tb);
    let (first, rest) = events.split_first().unwrap();
    assert_eq!(first.file_version.as_deref(), Some("brain.Event:2"));
    assert!(
        first.scalars.is_empty() && first.wall_time > 1.6e9,
        "{first:?}"
    );
    let rows = metrics::read(&dir.join("m.safetensors.metrics.csv")).unwrap();
    assert_eq!(rest.len(), rows.len(), "an event per row");
    for (e, r) in rest.iter().zip(&rows) {
        assert_eq!(e.step, r.step as u64);
        assert!(e.file_version.is_none());
        let scalars: BTreeMap<&str, f32> =
            e.scalars.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        assert_eq!(scalars["loss/train"], r.train_loss as f32);
        assert_eq!(scalars["loss/train_smoothed"], r.train_loss_smooth as f32);
        assert_eq!(
            scalars.get("loss/validation").copied(),
            r.val_loss.map(|v| v as f32)
        );
        assert_eq!(scalars["lr"], r.lr as f32);
        assert_eq!(scalars["grad_norm/global"], r.grad_norm as f32);
        assert_eq!(scalars["clipped"], f32::from(u8::from(r.clipped)));
        // The per-parameter diagnostic: its squares add up to the global norm's.
        let layers: Vec<f32> = scalars
            .iter()
            .filter(|(t, _)| t.starts_with("grad_norm/") && **t != "grad_norm/global")
            .map(|(_, v)| *v)
            .collect();
        assert!(
            scalars.contains_key("grad_norm/rnn.weight_hh_l1"),
            "{scalars:?}"
        );
        let sum: f64 = layers.iter().map(|&v| (v as f64).powi(2)).sum();
        assert!(
            (sum.sqrt() - r.grad_norm).abs() < 1e-5 * r.grad_norm,
            "{sum} {r:?}"
        );
    }
}

// The golden check against TensorBoard's own reader: tests/data/tensorboard_check.txt is what
// scripts/tensorboard_check.py printed reading the event file of the run below (the script says
// how to make it again). Every value but the speed, which is the machine's, must be read back
// the same from a fresh run.
#[test]
fn tensorboard_reads_the_event_file_as_scripts_tensorboard_check_py_recorded() {
    let dir = scratch();
    let ckpt = dir.join("m.safetensors");
    let tb = dir.join("events");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tensorboard_check_text.txt");
    let extra = [
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--log-every",
        "2",
        "--tensorboard",
        text(&tb),
    ];
    run(small(&data, &ckpt, &extra)).unwrap();
    let written: BTreeMap<(String, u64), f32> = events_in(&tb)
        .into_iter()
        .flat_map(|e| {
            e.scalars
                .into_iter()
                .map(move |(tag, v)| ((tag, e.step), v))
        })
        .collect();

    let golden_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tensorboard_check.txt");
    let golden = fs::read_to_string(golden_path).unwrap();
    let mut lines = golden.lines().filter(|l| !l.starts_with('#'));
    assert_eq!(
        lines.next(),
        Some("file_version 2.0"),
        "TensorBoard read brain.Event:2"
    );
    let read: BTreeMap<(String, u64), f64> = lines
        .map(|l| {
            let [tag, step, value] = l.split(' ').collect::<Vec<_>>()[..] else {
                panic!("{l}")
            };
            (
                (tag.to_string(), step.parse().unwrap()),
                value.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        read.keys().collect::<Vec<_>>(),
        "the same tags at the same steps"
    );
    for ((tag, step), value) in &read {
        if tag != "chars_per_s" {
            let fresh = written[&(tag.clone(), *step)] as f64;
            assert!(
                (fresh - value).abs() <= 1e-4 * value.abs(),
                "{tag} at {step}: {fresh} now, {value} read"
            );
        }
    }
}
