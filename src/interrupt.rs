//! Ctrl-C (SIGINT) and SIGTERM while a run trains: the first asks the run to stop where it
//! can resume from (after the current step, or the current evaluation batch), saving its
//! state first; a second ends the process at once. Installed by training only, so other
//! commands stop at Ctrl-C as they always did.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a stop has been asked for since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// An [`Error::Interrupted`] if a stop has been asked for, saying `where_` it stopped.
pub fn check(where_: impl FnOnce() -> String) -> Result<()> {
    match requested() {
        true => Err(Error::Interrupted(where_())),
        false => Ok(()),
    }
}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and _exit on the second signal.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Routes SIGINT and SIGTERM to the flag (once per process; elsewhere than Unix, nothing:
/// the signals end the process as before).
pub fn install() {
    #[cfg(unix)]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            for signal in [libc::SIGINT, libc::SIGTERM] {
                // SAFETY: the handler only touches an atomic and calls _exit (async-signal-
                // safe); signal() takes no pointers.
                unsafe {
                    // A signal the process was started ignoring (a background job of a
                    // script, `nohup`-like launchers) stays ignored, as shells expect.
                    if libc::signal(signal, handler) == libc::SIG_IGN {
                        libc::signal(signal, libc::SIG_IGN);
                    }
                }
            }
        });
    }
}

/// Writing to a closed pipe (`trifecta eval RUN | head -1`) ends the process quietly, as it
/// does any Unix tool, instead of a panic in `println!` (Rust's runtime ignores SIGPIPE, so
/// that every write to a closed pipe fails instead).
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: signal() takes no pointers, and SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
