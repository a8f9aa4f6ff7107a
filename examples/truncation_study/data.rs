//! The Time Machine as D2L tokenizes it: lowercase letters and one space for every run of
//! anything else, one token per character, the last tenth held out for validation.

use std::fs;
use std::path::Path;

/// The vocabulary: a space, then `a` to `z`.
pub const VOCAB: usize = 27;

/// Token ids of `text`: space is 0, `a`..`z` are 1..26; each run of characters that are not
/// ASCII letters becomes one space, and leading and trailing spaces are dropped.
pub fn tokenize(text: &str) -> Vec<usize> {
    let mut ids = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            ids.push(usize::from(c.to_ascii_lowercase() as u8 - b'a') + 1);
        } else if ids.last().is_some_and(|&last| last != 0) {
            ids.push(0);
        }
    }
    if ids.last() == Some(&0) {
        ids.pop();
    }
    ids
}

/// Reads and tokenizes `path` and splits it 90/10 into training and validation tokens; the
/// error is one line naming the file.
pub fn load(path: &Path, lanes: usize, steps: usize) -> Result<(Vec<usize>, Vec<usize>), String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("cannot read the text {}: {e}", path.display()))?;
    let mut train = tokenize(&text);
    let valid = train.split_off(train.len() - train.len() / 10);
    // Each split needs, per lane, one window and a target after it.
    let need = lanes * (steps + 1);
    if valid.len() < need {
        return Err(format!(
            "{}: {} tokens after cleaning, too few for a 90/10 split with {lanes} lanes of {} steps (needs at least {})",
            path.display(),
            train.len() + valid.len(),
            steps + 1,
            10 * need
        ));
    }
    Ok((train, valid))
}
