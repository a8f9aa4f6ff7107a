//! The text: a UTF-8 file, its characters as the vocabulary, the last 10% held out for
//! validation, and the line of held-out text whose attention is drawn.

use std::fs;
use std::path::Path;

use super::Error;

/// A text as token ids over its own characters.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The characters, sorted; a token is an index into this.
    pub vocab: Vec<char>,
    /// The first 90%.
    pub train: Vec<usize>,
    /// The last 10%.
    pub val: Vec<usize>,
}

impl Corpus {
    /// Reads `path` and splits it.
    pub fn load(path: &Path) -> Result<Corpus, Error> {
        let bytes = fs::read(path)
            .map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::Data(format!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        Ok(Corpus::from_text(&text))
    }

    /// The vocabulary of `text` and its 90/10 split.
    pub fn from_text(text: &str) -> Corpus {
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let mut train: Vec<usize> = text
            .chars()
            .map(|c| vocab.binary_search(&c).expect("in the vocabulary"))
            .collect();
        let val = train.split_off(train.len() - train.len() / 10);
        Corpus { vocab, train, val }
    }

    /// Where the drawn line lies in the held-out text, `start..end`: the first line of 20 to 80
    /// characters that starts at least `after` characters in, so that the window is full by
    /// then; else the 60 characters from there (or what there is).
    pub fn sample_line(&self, after: usize) -> (usize, usize) {
        let newline = self.vocab.binary_search(&'\n').ok();
        let n = self.val.len();
        let mut start = after.min(n.saturating_sub(1));
        while start < n {
            let end = (start..n)
                .find(|&i| Some(self.val[i]) == newline)
                .unwrap_or(n);
            let at_line_start = start == 0 || Some(self.val[start - 1]) == newline;
            if at_line_start && (20..=80).contains(&(end - start)) {
                return (start, end);
            }
            start = end + 1;
        }
        let start = after.min(n.saturating_sub(1));
        (start, (start + 60).min(n))
    }
}
