//! The agents' store in the lab: the spec file they watch, a 3-member etcd (with the
//! cluster's settings written by `netpath cluster init`), or gossip flags.
use std::process::Command;

use anyhow::{bail, Context, Result};
use netpath::{net::Ipv4Net, spec::ClusterSpec};

use super::{etcd, router_ip, Lab, LabConfig};

impl Lab {
    /// Replaces the spec file the agents watch (atomically, as an editor or a config
    /// manager would).
    pub fn write_spec_text(&self, text: &str) -> Result<()> {
        let tmp = self.workdir.join(".cluster.toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.spec_file)?;
        Ok(())
    }

    /// The spec file the agents read.
    pub fn spec_path(&self) -> &std::path::Path {
        &self.spec_file
    }

    pub fn write_spec(&self, spec: &ClusterSpec) -> Result<()> {
        self.write_spec_text(&spec.to_toml())
    }

    /// The etcd cluster on the first underlay subnet (addresses .250-.252), with
    /// the cluster config written by `netpath cluster init`.
    pub(super) fn start_etcd(
        &mut self,
        subnet: &Ipv4Net,
        tls: bool,
        cfg: &LabConfig,
    ) -> Result<()> {
        let ips = [subnet.nth(250), subnet.nth(251), subnet.nth(252)];
        let tls = if tls {
            Some(etcd::make_tls(&self.workdir.join("etcd-tls"), &ips)?)
        } else {
            None
        };
        let cluster = etcd::EtcdCluster::start(
            &format!("{}-etcd", self.prefix),
            etcd::EtcdPlace {
                fabric: self.fabric.as_ref().expect("fabric exists"),
                bridge: "ul0",
                ips,
                prefix_len: subnet.prefix,
                gateway: router_ip(subnet),
            },
            &self.workdir.join("etcd"),
            tls,
        )?;
        // The settings whole, from the spec file a spec-file user already has.
        let settings = self.workdir.join("cluster-spec.toml");
        std::fs::write(&settings, cfg.spec.to_toml())?;
        let mut args: Vec<String> = vec![
            "cluster".into(),
            "init".into(),
            "--cluster-config".into(),
            settings.display().to_string(),
        ];
        args.extend(etcd_args(&cluster));
        let out = cluster
            .ns
            .run(|| Ok(Command::new(&cfg.agent_bin).args(&args).output()?))?;
        if !out.status.success() {
            bail!(
                "netpath cluster init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.etcd = Some(cluster);
        Ok(())
    }

    /// The gossip flags every agent gets: the cluster's settings (the lab's spec's,
    /// with its nodes' subnet length), the first node's address as the one seed, and
    /// with `key` a cluster key.
    pub(super) fn gossip_args(&self, key: bool) -> Result<Vec<String>> {
        let subnet_len = self.spec.nodes.first().context("no nodes")?.pod_cidr.prefix;
        let config = netpath::store::model::ClusterConfig {
            settings: self.spec.settings.clone(),
            subnet_len,
        };
        let path = self.workdir.join("gossip-cluster.toml");
        std::fs::write(&path, toml::to_string(&config)?)?;
        let seed = self.spec.nodes[0].ip();
        let mut args = vec![
            "--cluster-config".to_string(),
            path.display().to_string(),
            "--peers".into(),
            seed.to_string(),
        ];
        if key {
            let k = self.workdir.join("gossip-cluster.key");
            std::fs::write(&k, format!("netpath lab cluster key {}\n", self.prefix))?;
            args.extend(["--cluster-key".into(), k.display().to_string()]);
        }
        Ok(args)
    }

    /// `netpath node remove NAME` against the lab's etcd.
    pub fn remove_node_from_etcd(&self, name: &str, cfg: &LabConfig) -> Result<String> {
        let cluster = self.etcd.as_ref().context("the lab has no etcd")?;
        let mut args = vec!["node".to_string(), "remove".into(), name.into()];
        args.extend(etcd_args(cluster));
        let out = cluster
            .ns
            .run(|| Ok(Command::new(&cfg.agent_bin).args(&args).output()?))?;
        if !out.status.success() {
            bail!(
                "netpath node remove: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The product's etcd flags for the lab's cluster.
pub(super) fn etcd_args(cluster: &etcd::EtcdCluster) -> Vec<String> {
    let mut a = vec![
        "--etcd-endpoints".to_string(),
        cluster.endpoints().join(","),
    ];
    if let Some(t) = cluster.tls() {
        a.extend([
            "--etcd-ca".into(),
            t.ca.display().to_string(),
            "--etcd-cert".into(),
            t.client_cert.display().to_string(),
            "--etcd-key".into(),
            t.client_key.display().to_string(),
        ]);
    }
    a
}
