//! What a bench run measures, decided once from its flags: a quick run leaves out
//! the slowest steps, a focused one (`--cni`, `--etcd`, …) measures one thing
//! precisely, a full one everything. Every list is empty when its part is not run,
//! so the run loops over them without asking again, and the step count for the
//! progress line is their sum.
use std::time::Instant;

use anyhow::Result;

use super::{progress, BenchArgs, PathKind};

pub struct Plan {
    pub rounds: usize,
    pub secs: u32,
    pub paths: Vec<PathKind>,
    /// Routes in the LPM per scale sample, and in how many rounds.
    pub scale_sizes: Vec<usize>,
    pub scale_rounds: usize,
    /// Nodes in the control-plane timing (empty: not measured).
    pub control_nodes: Vec<usize>,
    /// Peers for the agent's memory.
    pub memory_peers: Vec<usize>,
    pub cni_cycles: Option<usize>,
    pub monitor: bool,
    pub store_sizes: Vec<usize>,
    pub gossip_sizes: Vec<usize>,
    /// (speakers, through the router)
    pub bgp_sizes: Vec<(usize, bool)>,
    pub service_sizes: Vec<usize>,
    pub service_rounds: usize,
    pub cold_start_nodes: Option<usize>,
    /// netpath's policy sizes (none is always measured too), in how many rounds,
    /// and whether enforcement delays are timed.
    pub policy_sizes: Vec<usize>,
    pub policy_rounds: usize,
    pub policy_control: bool,
    /// Rounds of netpath with and without WireGuard.
    pub encryption_rounds: usize,
}

const SCALE_SIZES: [usize; 3] = [10, 1_000, 100_000];

impl Plan {
    pub fn of(args: &BenchArgs) -> Self {
        let focused = args.paths.is_some()
            || args.cni_only
            || args.etcd_only
            || args.monitor_only
            || args.bgp_only
            || args.services_only
            || args.policy_only
            || args.encryption_only
            || args.cold_start_only
            || args.memory_only
            || args.gossip_only;
        let quick = args.quick;
        let all_or = |only: bool| !focused || only;
        let pick = |part: bool, quick_set: &[usize], full_set: &[usize]| -> Vec<usize> {
            match (part, quick) {
                (false, _) => Vec::new(),
                (true, true) => quick_set.to_vec(),
                (true, false) => full_set.to_vec(),
            }
        };
        // A focused run measures few things precisely; the full run fits in 45
        // minutes with 21 paths in 3 rounds of 3 s, the quick one in 10.
        let (rounds, secs) = match (quick, focused) {
            (true, _) => (3, 1),
            (false, true) => (5, 4),
            (false, false) => (3, 3),
        };
        let paths = match (&args.paths, focused) {
            (Some(p), _) => p.clone(),
            (None, true) => Vec::new(),
            (None, false) if quick => PathKind::QUICK.to_vec(),
            (None, false) => PathKind::ALL.to_vec(),
        };
        let services = all_or(args.services_only);
        // A quick run leaves out the slowest steps (1000 etcd loops, BGP past 3
        // speakers, gossip past 10 members, services past one): ten minutes at most
        // on this machine (651 s with 20 BGP speakers, 100 gossip members and 1 000
        // services; 604 s with 20 speakers alone, 2026-12-05).
        Self {
            rounds,
            secs,
            paths,
            scale_sizes: SCALE_SIZES.to_vec(),
            // A quick run measures the route scale once; a full one in every round.
            scale_rounds: match (focused, quick) {
                (true, _) => 0,
                (false, true) => 1,
                (false, false) => rounds,
            },
            control_nodes: if focused { Vec::new() } else { vec![1000] },
            memory_peers: pick(all_or(args.memory_only), &SCALE_SIZES, &SCALE_SIZES),
            cni_cycles: all_or(args.cni_only).then_some(200),
            monitor: all_or(args.monitor_only),
            store_sizes: pick(all_or(args.etcd_only), &[10, 100], &[10, 100, 1000]),
            gossip_sizes: match (&args.gossip_members, all_or(args.gossip_only)) {
                (_, false) => Vec::new(),
                (Some(m), true) => m.clone(),
                (None, true) => pick(true, &[10], &[10, 100, 1000]),
            },
            // A full mesh of 50 on one L2 needs 2 450 ARP entries, more than the
            // kernel's one neighbour table for all namespaces holds (gc_thresh3 =
            // 1024): 50 peer with the router, as Calico advises past ~50 nodes anyway.
            bgp_sizes: match (all_or(args.bgp_only), quick) {
                (false, _) => Vec::new(),
                (true, true) => vec![(3, false), (3, true)],
                (true, false) => vec![(3, false), (20, false), (3, true), (50, true)],
            },
            service_sizes: pick(services, &[1], &[1, 100, 1000, 10_000]),
            service_rounds: match (services, quick) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => rounds,
            },
            cold_start_nodes: all_or(args.cold_start_only).then_some(args.cold_start_nodes),
            // A full run measures a short version (one round, ~2 minutes); a quick
            // one has no room for it.
            policy_sizes: match (args.policy_only, focused || quick) {
                (true, _) => vec![1, 100, 10_000],
                (false, false) => vec![1, 10_000],
                (false, true) => Vec::new(),
            },
            policy_rounds: match (args.policy_only, focused || quick) {
                (true, _) => rounds,
                (false, false) => 1,
                (false, true) => 0,
            },
            policy_control: args.policy_only,
            encryption_rounds: match (args.encryption_only, focused || quick) {
                (true, _) => rounds,
                (false, false) => 1,
                (false, true) => 0,
            },
        }
    }

    /// How many progress steps the run has.
    pub fn steps(&self) -> usize {
        self.rounds * self.paths.len()
            + self.scale_rounds * self.scale_sizes.len()
            + self.control_nodes.len()
            + self.memory_peers.len()
            + usize::from(self.cni_cycles.is_some())
            + usize::from(self.monitor)
            + self.store_sizes.len()
            + self.gossip_sizes.len()
            + self.bgp_sizes.len()
            + self.service_rounds * (self.service_sizes.len() + 1)
            + usize::from(self.cold_start_nodes.is_some())
            + 2 * self.policy_rounds
            + usize::from(self.policy_control)
            + 2 * self.encryption_rounds
    }
}

/// The progress line: step of total and the time left, and a stop by signal.
pub struct Progress {
    started: Instant,
    step: usize,
    total: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    pub fn new(total: usize, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self {
            started: Instant::now(),
            step: 0,
            total,
            stop,
        }
    }

    /// Says what comes next; an error once the run was asked to stop.
    pub fn tick(&mut self, what: &str) -> Result<()> {
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            anyhow::bail!("stopped by signal");
        }
        self.step += 1;
        let eta = if self.step > 1 {
            let per = self.started.elapsed().as_secs_f64() / (self.step - 1) as f64;
            format!(", ~{:.0} s left", per * (self.total - self.step + 1) as f64)
        } else {
            String::new()
        };
        progress(&format!("[{:>2}/{}] {what}{eta}", self.step, self.total));
        Ok(())
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tweak: impl FnOnce(&mut BenchArgs)) -> BenchArgs {
        let mut a = BenchArgs {
            quick: false,
            paths: None,
            profile: None,
            cni_only: false,
            etcd_only: false,
            monitor_only: false,
            bgp_only: false,
            services_only: false,
            policy_only: false,
            encryption_only: false,
            cold_start_only: false,
            memory_only: false,
            gossip_only: false,
            gossip_members: None,
            cold_start_nodes: 100_001,
            stop: Default::default(),
            out: "/nonexistent".into(),
        };
        tweak(&mut a);
        a
    }

    #[test]
    fn a_focused_run_measures_its_one_part_and_counts_its_steps() {
        let cni = Plan::of(&args(|a| a.cni_only = true));
        assert_eq!((cni.cni_cycles, cni.steps()), (Some(200), 1));
        assert!(cni.paths.is_empty() && cni.store_sizes.is_empty() && !cni.monitor);
        let two = Plan::of(&args(|a| {
            a.paths = Some(vec![PathKind::VethPair, PathKind::N2N])
        }));
        assert_eq!(
            (two.rounds, two.steps()),
            (5, 10),
            "5 rounds of 2 paths, nothing else"
        );
    }

    #[test]
    fn a_quick_run_leaves_out_the_slowest_steps_and_a_full_one_does_not() {
        let quick = Plan::of(&args(|a| a.quick = true));
        let full = Plan::of(&args(|_| {}));
        assert_eq!(quick.paths, PathKind::QUICK.to_vec());
        assert_eq!(full.paths, PathKind::ALL.to_vec());
        assert!(!quick.store_sizes.contains(&1000) && full.store_sizes.contains(&1000));
        assert!(quick.bgp_sizes.iter().all(|(n, _)| *n == 3));
        assert_eq!((quick.scale_rounds, full.scale_rounds), (1, 3));
        assert!(quick.steps() < full.steps());
        assert_eq!((quick.policy_rounds, full.policy_rounds), (0, 1));
        let policy = Plan::of(&args(|a| a.policy_only = true));
        assert_eq!(policy.policy_sizes, vec![1, 100, 10_000]);
        assert_eq!(
            policy.steps(),
            5 * 2 + 1,
            "two steps a round, then the control part"
        );
    }
}
