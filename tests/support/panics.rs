//! Catching an expected panic: its message and the place it reports.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static LAST: RefCell<Option<(String, u32)>> = const { RefCell::new(None) };
    static EXPECTING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, expecting a panic; returns its message and the file and line it points at.
pub fn panic_of(f: impl FnOnce()) -> (String, String, u32) {
    // One hook for the whole binary: tests run on parallel threads, each recording its own
    // expected panic's location in a thread-local. Any other panic (a failing assertion) is
    // reported by the default hook, so its message still shows.
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if EXPECTING.get() {
                let loc = info.location().map(|l| (l.file().to_string(), l.line()));
                LAST.with(|last| *last.borrow_mut() = loc);
            } else {
                report(info);
            }
        }))
    });
    EXPECTING.set(true);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    EXPECTING.set(false);
    let err = result.expect_err("expected a panic");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let (file, line) = LAST
        .with(|last| last.borrow_mut().take())
        .expect("a panic location");
    (msg, file, line)
}
