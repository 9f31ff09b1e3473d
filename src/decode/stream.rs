//! What a streaming callback may return: nothing (keep going), a [`ControlFlow`] (stop early),
//! or a `Result` (stop with an error, e.g. a closed pipe).

use crate::error::{Error, Result};
use std::ops::ControlFlow;

/// The callback [`crate::Decoder::decode`] streams text to: each piece of stable text, in order;
/// `Break` stops generation early, an error stops it and is returned.
pub type OnText<'a> = dyn FnMut(&str) -> Result<ControlFlow<()>> + 'a;

/// A streaming callback's answer: go on, stop early ([`crate::StopReason::Cancelled`]), or fail.
///
/// Implemented for `()` (always go on), [`ControlFlow<()>`], [`std::io::Result<()>`] (what
/// `write!` returns) and [`crate::Result`] of either, so the callback returns whatever is
/// natural.
///
/// # Examples
/// ```
/// use std::ops::ControlFlow;
/// use msn::StreamControl;
///
/// assert_eq!(().into_flow().unwrap(), ControlFlow::Continue(()));
/// assert_eq!(ControlFlow::Break(()).into_flow().unwrap(), ControlFlow::Break(()));
/// let closed: std::io::Result<()> = Err(std::io::ErrorKind::BrokenPipe.into());
/// assert!(closed.into_flow().is_err());
/// ```
pub trait StreamControl {
    /// Whether to go on.
    ///
    /// # Errors
    /// The callback's own error; an I/O error becomes [`Error::Stream`].
    fn into_flow(self) -> Result<ControlFlow<()>>;
}

impl StreamControl for () {
    fn into_flow(self) -> Result<ControlFlow<()>> {
        Ok(ControlFlow::Continue(()))
    }
}

impl StreamControl for ControlFlow<()> {
    fn into_flow(self) -> Result<ControlFlow<()>> {
        Ok(self)
    }
}

impl StreamControl for std::io::Result<()> {
    fn into_flow(self) -> Result<ControlFlow<()>> {
        self.map(|()| ControlFlow::Continue(()))
            .map_err(Error::Stream)
    }
}

impl<T: StreamControl> StreamControl for Result<T> {
    fn into_flow(self) -> Result<ControlFlow<()>> {
        self?.into_flow()
    }
}
