//! The command-line reading the examples share: flags parsed without ending the process, so that
//! tests can drive an example's `run`; help and version printed; a usage error as one line.

use std::ffi::OsString;
use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use clap::{ArgMatches, Parser};

/// The flags in `args` (the program name first) as `C`, with the matches they came from; `None`
/// when help or version was asked for and printed; a usage error as one line (what clap says
/// before its usage text), without clap's `error: `.
pub fn parse<C, I, T>(args: I) -> Result<Option<(C, ArgMatches)>, String>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match C::command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Ok(None);
        }
        Err(e) => return Err(first_line(&e.to_string())),
    };
    let flags = C::from_arg_matches(&matches).map_err(|e| first_line(&e.to_string()))?;
    Ok(Some((flags, matches)))
}

/// clap's message up to its first blank line (before the usage and the tips), as one line:
/// what is wrong, with the flags it names (a missing required flag is listed on the lines after
/// the first).
fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// The exit code of a run that failed, `error` printed as one line after the program's name: 2
/// for a usage error, 1 for any other.
pub fn failure(program: &str, error: &impl Display, usage: bool) -> ExitCode {
    // Not eprintln!, which panics when standard error is closed: the exit code still tells.
    let _ = writeln!(std::io::stderr(), "{program}: {error}");
    ExitCode::from(if usage { 2 } else { 1 })
}
