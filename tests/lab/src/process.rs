//! Processes a test starts: stopped by their PID when the guard goes, also when the
//! test fails on the way, so a failure leaves nothing running. The one guard for
//! every child the lab, the tests and the bench start.
use std::{
    process::Child,
    time::{Duration, Instant},
};

/// A process started by a test, stopped on drop (if it still runs) and waited for.
pub struct Spawned(pub Child, Stop);

/// How a guard stops its process.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: nothing of the process is needed any more.
    Kill,
    /// This signal first (the process cleans up after itself: a lab tears its
    /// namespaces down, perf writes its file), SIGKILL if it is still there after
    /// `grace`.
    Signal { sig: libc::c_int, grace: Duration },
}

impl Spawned {
    pub fn killing(child: Child) -> Self {
        Self(child, Stop::Kill)
    }

    /// SIGTERM, then SIGKILL after 30 s: a lab's teardown takes seconds, not that.
    pub fn terminating(child: Child) -> Self {
        Self::signalled(child, libc::SIGTERM, Duration::from_secs(30))
    }

    /// `sig`, then SIGKILL after `grace`.
    pub fn signalled(child: Child, sig: libc::c_int, grace: Duration) -> Self {
        Self(child, Stop::Signal { sig, grace })
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Stops the process as the guard would on drop; true when it had to be killed
    /// after ignoring its signal.
    pub fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.0.try_wait() {
            return false;
        }
        let killed = match self.1 {
            Stop::Kill => {
                let _ = self.0.kill();
                false
            }
            Stop::Signal { sig, grace } => {
                // SAFETY: signalling our own child by its PID.
                unsafe { libc::kill(self.0.id() as libc::pid_t, sig) };
                let deadline = Instant::now() + grace;
                loop {
                    if let Ok(Some(_)) = self.0.try_wait() {
                        return false;
                    }
                    if Instant::now() >= deadline {
                        let _ = self.0.kill();
                        break true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let _ = self.0.wait();
        killed
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}
