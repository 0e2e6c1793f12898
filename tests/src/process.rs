//! Processes a test starts: stopped by their PID when the guard goes, also when the
//! test fails on the way, so a failure leaves nothing running.
use std::process::Child;

/// A process started by a test, stopped on drop (if it still runs) and waited for.
pub struct Spawned(pub Child, Stop);

/// How a guard stops its process.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: nothing of the process is needed any more.
    Kill,
    /// SIGTERM: the process cleans up after itself (a lab tears its namespaces down).
    Terminate,
}

impl Spawned {
    pub fn killing(child: Child) -> Self {
        Self(child, Stop::Kill)
    }

    pub fn terminating(child: Child) -> Self {
        Self(child, Stop::Terminate)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        match self.1 {
            Stop::Kill => {
                let _ = self.0.kill();
            }
            // SAFETY: signalling our own child by its PID.
            Stop::Terminate => unsafe {
                libc::kill(self.0.id() as i32, libc::SIGTERM);
            },
        }
        let _ = self.0.wait();
    }
}
