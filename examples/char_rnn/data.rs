//! The text: read from a file or the built-in tinyshakespeare, its characters as the vocabulary,
//! and the last 10% held out for validation.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use rewind::nn::Tokens;

use super::checkpoint::text_hash;
use super::cli::human;
use super::memory;
use super::Error;

/// The text learnt when no `--data` is given: Karpathy's tinyshakespeare (about 1.1 MB, 65
/// characters; Shakespeare's plays, public domain), shipped in the repository and built into the
/// binary, so that every clone trains on the same text and sees the README's figures.
pub const TINY_SHAKESPEARE: &str = include_str!("tinyshakespeare.txt");

/// How messages name the built-in text.
const BUILT_IN: &str = "the built-in tinyshakespeare (examples/char_rnn/tinyshakespeare.txt)";

/// A text as token ids over its own characters.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The characters, sorted; a token is an index into this.
    pub vocab: Vec<char>,
    /// The first 90% of the text.
    pub train: Tokens,
    /// The last 10%.
    pub val: Tokens,
    /// Where the text came from, for messages.
    pub source: String,
    /// The text's [`text_hash`], recorded in checkpoints.
    pub hash: u64,
}

impl Corpus {
    /// Loads `path`, or with no path the built-in text, [`TINY_SHAKESPEARE`].
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        match path {
            Some(p) => Self::from_text(&read_text(p)?, p.display().to_string()),
            None => Self::from_text(TINY_SHAKESPEARE, BUILT_IN.to_string()),
        }
    }

    /// Builds the vocabulary and the split from a text. Beside the text it holds one token id
    /// per character, in the narrowest integer that fits the vocabulary (a byte for most texts).
    pub fn from_text(text: &str, source: String) -> Result<Self, Error> {
        if text.is_empty() {
            return Err(Error::Data(format!(
                "{source} is empty: there is nothing to learn from"
            )));
        }
        let vocab = vocabulary(text);
        // ASCII, most of most texts, is looked up in a table; the rest by binary search.
        let mut ascii = [0usize; 128];
        for (i, &c) in vocab.iter().enumerate().filter(|(_, c)| c.is_ascii()) {
            ascii[c as usize] = i;
        }
        let mut train = Tokens::for_vocab(vocab.len(), text.chars().count());
        for c in text.chars() {
            train.push(match c.is_ascii() {
                true => ascii[c as usize],
                false => vocab
                    .binary_search(&c)
                    .expect("every character is in the vocabulary"),
            });
        }
        let val = train.split_off(train.len() - train.len() / 10);
        Ok(Corpus {
            vocab,
            train,
            val,
            source,
            hash: text_hash(text),
        })
    }

    /// The token of each character of `text`, or the first character not in the vocabulary.
    pub fn encode(vocab: &[char], text: &str) -> Result<Vec<usize>, char> {
        text.chars()
            .map(|c| vocab.binary_search(&c).map_err(|_| c))
            .collect()
    }

    /// The bytes its token ids take while training: the text's, and the copies the training
    /// stream and the evaluation read from.
    pub fn held_bytes(&self) -> u64 {
        let width = match &self.train {
            Tokens::U8(_) => 1,
            Tokens::U16(_) => 2,
            Tokens::U32(_) => 4,
        };
        2 * width * (self.train.len() + self.val.len()) as u64
    }

    /// Checks that the text is long enough for `batch` lanes of `seq_len` steps, and the held-out
    /// tenth for one step.
    pub fn check_length(&self, batch: usize, seq_len: usize) -> Result<(), Error> {
        let need = seq_len.checked_add(1).and_then(|w| w.checked_mul(batch));
        if need.is_some_and(|n| self.train.len() >= n) && self.val.len() >= 2 {
            return Ok(());
        }
        let total = self.train.len() + self.val.len();
        let want = match need.and_then(|n| n.checked_add(n / 9 + 2)) {
            Some(w) => format!("at least {w}"),
            None => "more than a usize can count".to_string(),
        };
        Err(Error::Data(format!(
            "{} has {total} characters; --batch {batch} × (--seq-len {seq_len} + 1) needs {want} with the held-out tenth: use a longer text or lower --batch or --seq-len",
            self.source
        )))
    }
}

/// The distinct characters of `text`, sorted, found without a copy of the text.
fn vocabulary(text: &str) -> Vec<char> {
    let mut ascii = [false; 128];
    let mut other = BTreeSet::new();
    for c in text.chars() {
        match c.is_ascii() {
            true => ascii[c as usize] = true,
            false => {
                other.insert(c);
            }
        }
    }
    let ascii = (0..128u8).filter(|&b| ascii[b as usize]).map(char::from);
    // Every non-ASCII character sorts after every ASCII one.
    ascii.chain(other).collect()
}

/// The text at `path`, refused before it is read if it would not fit: held as it is read, then
/// as token ids and the training stream's copy of them, three bytes for each of its bytes with a
/// vocabulary of up to 256 characters. A pipe, whose size is unknown, is read up to that bound;
/// a device is refused.
fn read_text(path: &Path) -> Result<String, Error> {
    let cannot = |e: std::io::Error| Error::Data(format!("cannot read {}: {e}", path.display()));
    let (limit, source) = memory::limit();
    let too_long = |size: String| {
        Error::Data(format!(
            "{} is {size}: with its token ids it needs about three times that in memory, but at most {} is available ({source}); use a shorter text",
            path.display(),
            human(limit)
        ))
    };
    let file = File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if is_device(&meta) {
        return Err(Error::Data(format!(
            "{} is a device, not a text: pass a file or a pipe",
            path.display()
        )));
    }
    let size = meta.len();
    let most = limit / 3;
    if size > most {
        return Err(too_long(human(size)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(most + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > most {
        return Err(too_long(format!("longer than {}", human(most))));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::Data(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// True for a character or block device (`/dev/zero` would be read until memory ran out).
#[cfg(unix)]
fn is_device(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() || meta.file_type().is_block_device()
}

#[cfg(not(unix))]
fn is_device(_: &fs::Metadata) -> bool {
    false
}
