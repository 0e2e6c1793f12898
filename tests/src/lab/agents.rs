//! One real `netpath agent` process per netpath node, stopped by PID on drop.
use std::{
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

/// A running agent process, stopped (SIGTERM, then SIGKILL) on drop.
pub(super) struct AgentProcess {
    pub(super) child: Child,
    pub(super) node: String,
    pub(super) log: PathBuf,
}

impl AgentProcess {
    pub(super) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(node = %self.node, "agent ignored SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
