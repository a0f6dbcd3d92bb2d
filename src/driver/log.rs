//! `tracing` events from the driver, when the `tracing` feature is on.

/// Logs a driver event when the `tracing` feature is on; compiles to nothing otherwise.
macro_rules! event {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "redial", $($arg)*);
    }};
}
pub(crate) use event;

/// Displays an error with its whole chain (`{:#}`), for a `tracing` field.
#[cfg(feature = "tracing")]
pub(crate) struct Chain<'a, T: ?Sized>(pub(crate) &'a T);

#[cfg(feature = "tracing")]
impl<T: core::fmt::Display + ?Sized> core::fmt::Display for Chain<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}
