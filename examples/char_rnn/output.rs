//! Standard output that may be closed (`| head -3`) or full (`> /dev/full`): a failed write is
//! kept, not a panic as `println!` makes it, so that training can stop and save as on Ctrl-C.

use std::fmt::Display;
use std::io::{self, Write};

/// Standard output, written line by line until the first write that fails.
#[derive(Debug, Default)]
pub struct Output {
    failed: Option<io::Error>,
    quiet: bool,
}

impl Output {
    /// An output that writes nothing: another rank than rank 0 of an MPI run.
    pub fn quiet() -> Self {
        Output {
            failed: None,
            quiet: true,
        }
    }

    /// Writes `text` and a newline, unless a write has failed already. Standard output is line
    /// buffered, so a closed or full one fails here, not at some later flush.
    pub fn line(&mut self, text: impl Display) {
        if self.failed.is_none() && !self.quiet {
            if let Err(e) = writeln!(io::stdout(), "{text}") {
                self.failed = Some(e);
            }
        }
    }

    /// The error of the first write that failed.
    pub fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }
}
