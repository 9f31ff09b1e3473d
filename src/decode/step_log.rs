//! What each decoding step did besides its forward pass: its host time and what it read back
//! from the device ([`Generation::host_step_s`], `host_reads`, `host_read_bytes`).

use crate::generation::Generation;
use crate::logits::reads;

/// Per decoding step: host seconds, reads back from the device and their bytes.
#[derive(Debug, Default)]
pub(crate) struct StepLog {
    host_s: Vec<f64>,
    reads: Vec<usize>,
    bytes: Vec<usize>,
}

/// The read counter when a step started.
pub(crate) struct StepStart((usize, usize));

impl StepLog {
    /// Marks the start of a step.
    pub(crate) fn start() -> StepStart {
        StepStart(reads())
    }

    /// Records a step begun at `start` that spent `host_s` seconds on the host.
    pub(crate) fn end(&mut self, start: StepStart, host_s: f64) {
        let (now, then) = (reads(), start.0);
        self.host_s.push(host_s);
        self.reads.push(now.0 - then.0);
        self.bytes.push(now.1 - then.1);
    }

    /// Puts the record into `g`.
    pub(crate) fn finish(self, g: &mut Generation) {
        (g.host_step_s, g.host_reads, g.host_read_bytes) = (self.host_s, self.reads, self.bytes);
    }
}
