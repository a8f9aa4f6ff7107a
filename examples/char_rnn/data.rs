//! The text: read from a file or from this project's Rust sources, its characters as the
//! vocabulary, and the last 10% held out for validation.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::Error;

/// A text as token ids over its own characters.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The characters, sorted; a token is an index into this.
    pub vocab: Vec<char>,
    /// The first 90% of the text.
    pub train: Vec<usize>,
    /// The last 10%.
    pub val: Vec<usize>,
    /// Where the text came from, for messages.
    pub source: String,
}

impl Corpus {
    /// Loads `path`, or with no path the `.rs` files under this package's `crates/` directory.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let (text, source) = match path {
            Some(p) => (read_text(p)?, p.display().to_string()),
            None => own_sources()?,
        };
        Self::from_text(&text, source)
    }

    /// Builds the vocabulary and the split from a text.
    pub fn from_text(text: &str, source: String) -> Result<Self, Error> {
        if text.is_empty() {
            return Err(Error::Data(format!(
                "{source} is empty: there is nothing to learn from"
            )));
        }
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let index: HashMap<char, usize> = vocab.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let tokens: Vec<usize> = text.chars().map(|c| index[&c]).collect();
        let split = tokens.len() - tokens.len() / 10;
        Ok(Corpus {
            vocab,
            val: tokens[split..].to_vec(),
            train: tokens[..split].to_vec(),
            source,
        })
    }

    /// The token of each character of `text`, or the first character not in the vocabulary.
    pub fn encode(vocab: &[char], text: &str) -> Result<Vec<usize>, char> {
        text.chars()
            .map(|c| vocab.binary_search(&c).map_err(|_| c))
            .collect()
    }

    /// Checks that the text is long enough for `batch` lanes of `seq_len` steps, and the held-out
    /// tenth for one step.
    pub fn check_length(&self, batch: usize, seq_len: usize) -> Result<(), Error> {
        let need = batch * (seq_len + 1);
        if self.train.len() < need || self.val.len() < 2 {
            let total = self.train.len() + self.val.len();
            let want = need + need / 9 + 2;
            return Err(Error::Data(format!(
                "{} has {total} characters; --batch {batch} × (--seq-len {seq_len} + 1) needs at least {want} with the held-out tenth: use a longer text or lower --batch or --seq-len",
                self.source
            )));
        }
        Ok(())
    }
}

fn read_text(path: &Path) -> Result<String, Error> {
    let bytes =
        fs::read(path).map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Data(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// This project's Rust sources, found from the package's manifest directory at run time (cargo
/// sets it for `cargo run`), else where the example was built.
fn own_sources() -> Result<(String, String), Error> {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let crates = root.join("crates");
    let mut files = Vec::new();
    collect_rs(&crates, &mut files);
    files.sort();
    if files.is_empty() {
        return Err(Error::Data(format!(
            "found no .rs files under {}: pass --data FILE with a text to learn",
            crates.display()
        )));
    }
    let mut text = String::new();
    for f in &files {
        text.push_str(&read_text(f)?);
        text.push('\n');
    }
    Ok((
        text,
        format!(
            "the {} Rust sources under {}",
            files.len(),
            crates.display()
        ),
    ))
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
