//! What the driver's modules share: reading a panic's message, keeping the
//! panics they script off stderr (one panic hook for the whole binary), and a
//! value whose `Drop` panics.

use std::any::Any;
use std::sync::{Mutex, Once};

/// The message of a panic payload (a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// The markers of the panics kept quiet.
static QUIET: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Keeps every panic whose message contains `marker` off stderr from now on (the
/// tests script such panics by the thousand); any other panic, a failed assertion
/// above all, is reported as usual.
pub fn quiet_panics_containing(marker: &'static str) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            let quiet = QUIET.lock().unwrap_or_else(|e| e.into_inner());
            if quiet.iter().any(|marker| message.contains(marker)) {
                return;
            }
            drop(quiet);
            default(info);
        }));
    });
    let mut quiet = QUIET.lock().unwrap_or_else(|e| e.into_inner());
    if !quiet.contains(&marker) {
        quiet.push(marker);
    }
}

/// A value whose `Drop` panics (hostile user code): an error, a connection
/// driver's guard.
#[derive(Debug)]
pub struct PanicsOnDrop;

impl std::fmt::Display for PanicsOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("PanicsOnDrop dropped");
        }
    }
}
