//! Ctrl-C, SIGTERM and SIGHUP ask the training loop to save and stop, except a signal that was
//! ignored when the program started: `nohup` ignores SIGHUP so that closing the terminal leaves
//! the run alone, and a shell's `&` without job control ignores SIGINT; those stay ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Set by the handler; the loop saves and stops when it sees it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Clears the request and, the first time in the process, installs the handler.
pub fn listen() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let ignored = ignored_now();
        // ctrlc takes all three signals; the ones ignored before are given back at once (a
        // signal in between saves and stops the run, which loses nothing).
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
        ignore(&ignored);
    });
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// True once a signal asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The signals of the handler whose disposition is "ignore".
#[cfg(unix)]
fn ignored_now() -> Vec<libc::c_int> {
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
        .into_iter()
        .filter(|&signal| {
            // SAFETY: sigaction is plain data, for which all zeros is a value.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a null new action only reads the current one into `old`, which outlives
            // the call.
            let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
            read == 0 && old.sa_sigaction == libc::SIG_IGN
        })
        .collect()
}

#[cfg(unix)]
fn ignore(signals: &[libc::c_int]) {
    for &signal in signals {
        // SAFETY: SIG_IGN installs no code to run; `signal` is a valid signal number.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
}

#[cfg(not(unix))]
fn ignored_now() -> Vec<i32> {
    Vec::new()
}

#[cfg(not(unix))]
fn ignore(_: &[i32]) {}
