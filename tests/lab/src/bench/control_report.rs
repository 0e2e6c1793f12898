//! The bench report's sections past the datapath: the agent's memory, CNI, Services
//! at scale, cold start, route convergence by BGP, the etcd and gossip stores.
use std::fmt::Write as _;

use super::Run;

pub fn write_markdown(md: &mut String, run: &Run) {
    if let Some(c) = &run.control_plane {
        let _ = writeln!(
            md,
            "\n## Control plane\n\nA {}-node cluster spec: parse and validate {:.1} ms; program one node's maps \
             ({} routes + {} tunnel peers, as a diff) {:.1} ms; install its {} kernel routes over netlink {:.1} ms.",
            c.nodes + 1,
            c.parse_validate_ms,
            c.nodes,
            c.nodes,
            c.program_maps_ms,
            c.nodes,
            c.program_kernel_routes_ms
        );
    }
    if !run.agent_memory.is_empty() {
        let _ = writeln!(
            md,
            "\n## Memory\n\nOne node's agent given a spec with this many other nodes (one pod CIDR \
             route, one tunnel peer and one kernel route each), measured once every kernel route \
             is in place; RSS is the median of readings after that, 3 s of them (25 s, two \
             resync passes, with 100 000 peers), the highest beside it (a resync pass \
             allocates for a moment):\n\n| peers (routes) | agent RSS MiB | highest MiB | BPF map memory MiB | converged in ms |\n| --- | --- | --- | --- | --- |"
        );
        for m in &run.agent_memory {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.1} | {:.0} |",
                m.peers,
                m.rss_kib / 1024.0,
                m.rss_max_kib / 1024.0,
                m.map_kib / 1024.0,
                m.converge_ms
            );
        }
    }
    if !run.cni.is_empty() {
        let _ = writeln!(
            md,
            "\n## CNI ADD+DEL round trip\n\nA runtime's cost per pod: exec the plugin(s), wire and \
             allocate, unwire and free; cycles interleaved with the reference plugins.\n\n\
             | plugin | cycles | p50 ms | p99 ms |\n| --- | --- | --- | --- |"
        );
        for c in &run.cni {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} |",
                c.plugin, c.cycles, c.add_del_p50_ms, c.add_del_p99_ms
            );
        }
    }
    super::services_report::write_markdown(md, run);
    super::cold_start::write_markdown(md, &run.cold_start);
    if !run.bgp_convergence.is_empty() {
        let _ = writeln!(
            md,
            "\n## Route convergence by BGP\n\nN speakers: real nodes (agent + BIRD each) in a \
             full iBGP mesh, or each peering with the fabric router (FRR); one more joins through \
             the spec file. Time until every node routes its pod CIDR (its ROUTES entry), from the \
             spec naming it (its agent's start included) and from its agent being ready.\n\n\
             | speakers | topology | join -> routed ms | ready -> routed ms | cold up ms |\n\
             | --- | --- | --- | --- | --- |"
        );
        for c in &run.bgp_convergence {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} |",
                c.speakers, c.topology, c.join_to_routed_ms, c.ready_to_routed_ms, c.cold_ms
            );
        }
    }
    if !run.store_scale.is_empty() {
        let _ = writeln!(
            md,
            "\n## Control plane on etcd\n\nM agent control loops in one process (the product's \
             store, plan and diff; an in-memory sink instead of maps) against the lab's 3-member \
             etcd; a node joins, then is removed (`node remove`): time until every loop planned \
             the change, counted from the start of the joining node's own join call (its \
             reservation, record and first listing: \"own join\") and from the removal.\n\n\
             | loops | own join ms | join p50 ms | join p99 ms | leave p50 ms | leave p99 ms \
             | etcd messages/s idle | KiB per loop |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for s in &run.store_scale {
            if let Some(e) = &s.error {
                let _ = writeln!(md, "| {} | not measured: {e} | | | | | | |", s.agents);
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s.agents,
                s.join_call_ms,
                s.join_p50_ms,
                s.join_p99_ms,
                s.leave_p50_ms,
                s.leave_p99_ms,
                s.etcd_requests_per_s,
                s.kib_per_agent
            );
        }
    }
    if !run.gossip_scale.is_empty() {
        let _ = writeln!(
            md,
            "\n## Control plane by gossip\n\nM members in one process, each on a loopback \
             address of its own (the product's membership, wire with a cluster key, and claims), \
             booting in waves of 50 every second with the first three as their peers; then a new \
             member joins: time from its claim \
             to every member's spec holding it (specs are built at the first 250-ms tick after news, at most once a second while \
             news streams in); bytes each member \
             sends per second while the cluster idles, and the members declared down meanwhile \
             (summed over every member's view: false verdicts, as all are alive); this process's \
             memory per member.\n\n\
             | members | all joined and heard, ms | join p50 ms | join p99 ms | bytes/s per member idle \
             | declared down while idle | KiB per member |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        for s in &run.gossip_scale {
            if let Some(e) = &s.error {
                let _ = writeln!(md, "| {} | not measured: {e} | | | | | |", s.members);
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} |",
                s.members,
                s.converged_ms,
                s.join_p50_ms,
                s.join_p99_ms,
                s.bytes_per_s_per_member,
                s.declared_down_at_rest,
                s.kib_per_member
            );
        }
    }
}
