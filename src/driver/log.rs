//! `tracing` events from the driver, when the `tracing` feature is on.

/// Logs a driver event when the `tracing` feature is on; compiles to nothing otherwise.
macro_rules! event {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "redial", $($arg)*);
    }};
}
pub(crate) use event;
