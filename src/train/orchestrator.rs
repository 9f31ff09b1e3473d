//! burn's global orchestrator: where the worker processes of a data-parallel run meet.

use crate::error::{Error, Result};

/// Runs burn's global orchestrator on `port` until the process is stopped (Ctrl-C): the
/// meeting point of the worker processes of runs whose [`Network::orchestrator`](crate::train::Network::orchestrator) is
/// `ws://THIS_HOST:port`. Needs the `collective` feature.
///
/// # Errors
/// [`Error::InvalidArgument`] without the feature; [`Error::Io`] when no runtime starts.
pub fn run_orchestrator(port: u16) -> Result<()> {
    #[cfg(feature = "collective")]
    {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::io("tokio runtime", e))?;
        runtime.block_on(burn_collective::start_global_orchestrator(port));
        Ok(())
    }
    #[cfg(not(feature = "collective"))]
    {
        let _ = port;
        Err(Error::InvalidArgument(
            "the orchestrator needs msn's `collective` feature".into(),
        ))
    }
}
