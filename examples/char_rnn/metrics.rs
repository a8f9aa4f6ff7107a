//! A run's records: the metrics file `<checkpoint>.metrics.csv` beside the checkpoint, the curve
//! `<checkpoint>.curve.svg` redrawn at each evaluation, and the TensorBoard events.
//!
//! The metrics file is CSV: its columns are fixed and all numbers, so it opens as it is in a
//! spreadsheet, `pandas.read_csv` or gnuplot, and a line cut short shows by its missing newline.
//! A row is appended in one write of the whole line (a killed run leaves whole lines, and at most
//! a last one cut short, which a reader skips), flushed to disk before every checkpoint save (a
//! checkpoint on disk has its rows on disk), and written only by the run holding the checkpoint's
//! lock. A run resumed from a checkpoint of step S continues the file with its rows up to S, in
//! a copy put in place atomically: the rows a killed run wrote past its last checkpoint are
//! dropped, since the resumed run takes those steps again.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rewind::autograd::io::{remove_temporaries, write_atomic};

use super::cli::Across;
use super::plot;
use super::tensorboard::EventFile;
use super::Error;

/// The metrics file's first line, naming its columns.
pub const HEADER: &str =
    "step,elapsed_s,chars_per_s,train_loss,train_loss_smooth,val_loss,lr,grad_norm,clipped";

/// One logged step.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Optimizer steps taken.
    pub step: usize,
    /// Seconds of training so far, the resumed runs' included.
    pub elapsed: f64,
    /// Training characters per second over this run.
    pub chars_per_s: f64,
    /// This step's training loss, nats per character.
    pub train_loss: f64,
    /// The training loss smoothed over steps (an exponential average, weight 0.05 on each step).
    pub train_loss_smooth: f64,
    /// The validation loss, at the steps it is measured.
    pub val_loss: Option<f64>,
    /// The learning rate of this step's update.
    pub lr: f64,
    /// The global L2 norm of this step's gradient, before clipping.
    pub grad_norm: f64,
    /// Whether the gradient was clipped.
    pub clipped: bool,
}

impl Row {
    /// The row as a line of the file, newline included. Losses and norms are written in full
    /// (shortest round-trip form), so that a resumed run continues the smoothed loss exactly.
    pub fn line(&self) -> String {
        let val = self.val_loss.map_or(String::new(), |v| v.to_string());
        format!(
            "{},{:.3},{:.0},{},{},{val},{},{},{}\n",
            self.step,
            self.elapsed,
            self.chars_per_s,
            self.train_loss,
            self.train_loss_smooth,
            self.lr,
            self.grad_norm,
            u8::from(self.clipped)
        )
    }

    /// A line without its newline; the error says what is wrong with it.
    fn parse(line: &str) -> Result<Row, String> {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 9 {
            return Err(format!(
                "expected 9 comma-separated fields, found {}",
                fields.len()
            ));
        }
        let names: Vec<&str> = HEADER.split(',').collect();
        let number = |i: usize| -> Result<f64, String> {
            fields[i]
                .parse::<f64>()
                .map_err(|_| format!("{} {:?} is not a number", names[i], fields[i]))
        };
        Ok(Row {
            step: fields[0]
                .parse()
                .map_err(|_| format!("step {:?} is not a whole number", fields[0]))?,
            elapsed: number(1)?,
            chars_per_s: number(2)?,
            train_loss: number(3)?,
            train_loss_smooth: number(4)?,
            val_loss: match fields[5] {
                "" => None,
                _ => Some(number(5)?),
            },
            lr: number(6)?,
            grad_norm: number(7)?,
            clipped: match fields[8] {
                "0" => false,
                "1" => true,
                other => return Err(format!("clipped {other:?} is not 0 or 1")),
            },
        })
    }
}

/// `<checkpoint>.metrics.csv`.
pub fn metrics_path(checkpoint: &Path) -> PathBuf {
    suffixed(checkpoint, ".metrics.csv")
}

/// `<checkpoint>.curve.svg`.
pub fn curve_path(checkpoint: &Path) -> PathBuf {
    suffixed(checkpoint, ".curve.svg")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The rows of the metrics file at `path`, in order. A last line without its newline (a write
/// cut short) is left out; anything else that is not a row, or a step that does not follow the
/// one before, is an error naming the file and the line.
pub fn read(path: &Path) -> Result<Vec<Row>, Error> {
    let text = fs::read_to_string(path).map_err(|e| {
        Error::Metrics(format!(
            "cannot read the metrics file {}: {e}",
            path.display()
        ))
    })?;
    let at =
        |n: usize, what: String| Error::Metrics(format!("{} line {n}: {what}", path.display()));
    let mut rows: Vec<Row> = Vec::new();
    for (i, piece) in text.split_inclusive('\n').enumerate() {
        let Some(line) = piece.strip_suffix('\n') else {
            break;
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i == 0 {
            if line != HEADER {
                return Err(at(
                    1,
                    format!("expected the header `{HEADER}`, found `{line}`"),
                ));
            }
            continue;
        }
        let row = Row::parse(line).map_err(|e| at(i + 1, e))?;
        if let Some(last) = rows.last().filter(|last| last.step >= row.step) {
            return Err(at(
                i + 1,
                format!(
                    "step {} after step {}: the steps must increase",
                    row.step, last.step
                ),
            ));
        }
        rows.push(row);
    }
    if !text.starts_with(HEADER) {
        return Err(at(
            1,
            format!("the file has no header: expected `{HEADER}`"),
        ));
    }
    Ok(rows)
}

/// The run's records, written as it trains. A write that fails is kept, not returned: the loop
/// stops and saves as when standard output fails ([`Records::failed`]).
#[derive(Debug)]
pub struct Records {
    csv: File,
    csv_path: PathBuf,
    curve: PathBuf,
    name: String,
    events: Option<EventFile>,
    rows: Vec<Row>,
    failed: Option<String>,
}

impl Records {
    /// Starts the records of the run holding `checkpoint`. `resume` is the checkpoint resumed and
    /// its step: its metrics file's rows up to that step begin this run's file. Without it, any
    /// metrics file at the path is an earlier run's, replaced. Checks `tensorboard` before any
    /// training.
    pub fn open(
        checkpoint: &Path,
        resume: Option<(&Path, usize)>,
        tensorboard: Option<&Path>,
    ) -> Result<Records, Error> {
        // First, so that a bad directory fails before the metrics file is touched.
        let events = tensorboard
            .map(|dir| EventFile::create(dir, resume.map(|(_, step)| step)))
            .transpose()?;
        let csv_path = metrics_path(checkpoint);
        let curve = curve_path(checkpoint);
        // Under the checkpoint's lock: a killed run's temporaries are nobody's.
        for path in [&csv_path, &curve] {
            let _ = remove_temporaries(path);
        }
        let rows = match resume {
            Some((from, step)) => kept_rows(&metrics_path(from), step)?,
            None => {
                if fs::symlink_metadata(&csv_path).is_ok() {
                    super::tell(
                        "note",
                        &format!("replacing {}, an earlier run's", csv_path.display()),
                    );
                }
                Vec::new()
            }
        };
        let mut text = format!("{HEADER}\n");
        text.extend(rows.iter().map(Row::line));
        let cannot = |e: &dyn std::fmt::Display| {
            Error::Metrics(format!(
                "cannot write the metrics file {}: {e}",
                csv_path.display()
            ))
        };
        write_atomic(&csv_path, text.as_bytes()).map_err(|e| cannot(&e))?;
        let csv = OpenOptions::new()
            .append(true)
            .open(&csv_path)
            .map_err(|e| cannot(&e))?;
        let name = checkpoint
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        Ok(Records {
            csv,
            csv_path,
            curve,
            name,
            events,
            rows,
            failed: None,
        })
    }

    /// The last row kept from the runs resumed.
    pub fn last(&self) -> Option<&Row> {
        self.rows.last()
    }

    /// Appends `row` to the metrics file and the event file (with `param_norms`, each
    /// parameter's gradient norm by name), and redraws the curve if it carries a validation loss.
    pub fn write(&mut self, row: Row, param_norms: &[(String, f64)]) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.csv.write_all(row.line().as_bytes()) {
            self.failed = Some(failure(&self.csv_path, e));
            return;
        }
        if let Some(events) = &mut self.events {
            let mut scalars = vec![
                ("loss/train".to_string(), row.train_loss as f32),
                (
                    "loss/train_smoothed".to_string(),
                    row.train_loss_smooth as f32,
                ),
                ("lr".to_string(), row.lr as f32),
                ("grad_norm/global".to_string(), row.grad_norm as f32),
                ("clipped".to_string(), f32::from(u8::from(row.clipped))),
                ("chars_per_s".to_string(), row.chars_per_s as f32),
            ];
            if let Some(val) = row.val_loss {
                scalars.insert(2, ("loss/validation".to_string(), val as f32));
            }
            scalars.extend(
                param_norms
                    .iter()
                    .map(|(name, norm)| (format!("grad_norm/{name}"), *norm as f32)),
            );
            if let Err(e) = events.scalars(row.step, &scalars) {
                self.failed = Some(failure(events.path(), e));
                return;
            }
        }
        let evaluated = row.val_loss.is_some();
        self.rows.push(row);
        if evaluated {
            if let Err(e) = plot::draw(&[(&self.name, &self.rows)], &self.curve, Across::Step) {
                self.failed = Some(e);
            }
        }
    }

    /// Flushes the metrics and events to disk: called before each checkpoint save, so that a
    /// checkpoint that survives a crash has its rows.
    pub fn sync(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.csv.sync_data() {
            self.failed = Some(failure(&self.csv_path, e));
        } else if let Some(events) = &self.events {
            if let Err(e) = events.sync() {
                self.failed = Some(failure(events.path(), e));
            }
        }
    }

    /// What failed, once a write has.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the event file takes each parameter's gradient norm.
    pub fn wants_param_norms(&self) -> bool {
        self.events.is_some()
    }
}

/// What a failed write of `path` says.
fn failure(path: &Path, e: std::io::Error) -> String {
    format!("writing {} failed ({e})", path.display())
}

/// The rows up to `step` of the metrics file at `path`; none, with a note, if it has none.
fn kept_rows(path: &Path, step: usize) -> Result<Vec<Row>, Error> {
    if fs::symlink_metadata(path).is_err() {
        super::tell(
            "note",
            &format!(
                "{} is missing: the metrics file starts again at step {step}",
                path.display()
            ),
        );
        return Ok(Vec::new());
    }
    let mut rows = read(path)
        .map_err(|e| Error::Metrics(format!("{e}: move the file away to resume with a new one")))?;
    rows.retain(|r| r.step <= step);
    Ok(rows)
}
