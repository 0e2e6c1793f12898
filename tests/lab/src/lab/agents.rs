//! One real `netpath agent` process per netpath node, stopped by PID on drop.
use std::path::PathBuf;

use crate::process::Spawned;

/// A running agent process, stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub(super) struct AgentProcess {
    pub(super) child: Spawned,
    pub(super) node: String,
    pub(super) log: PathBuf,
}

impl AgentProcess {
    pub(super) fn stop(&mut self) {
        if self.child.stop() {
            tracing::warn!(node = %self.node, "agent ignored SIGTERM; killed it");
        }
    }
}
