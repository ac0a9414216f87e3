//! How long each step of a create or a delete took, logged at debug level with the sandbox
//! (`RUST_LOG=berth_docker=debug`): where the time of a slow create goes, and what the
//! `volume_cost` benchmark profiles against the engine's floor.

use std::time::{Duration, Instant};

pub(crate) struct StepTimes {
    what: &'static str,
    started: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StepTimes {
    pub(crate) fn start(what: &'static str) -> Self {
        let now = Instant::now();
        Self {
            what,
            started: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Ends `step` now (it began where the previous one ended).
    pub(crate) fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }

    pub(crate) fn log(&self, sandbox: &str) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(step, took)| format!("{step}={:.1}", took.as_secs_f64() * 1e3))
            .collect();
        tracing::debug!(
            sandbox,
            total_ms = self.started.elapsed().as_secs_f64() * 1e3,
            steps_ms = %steps.join(" "),
            "{} steps",
            self.what
        );
    }
}
