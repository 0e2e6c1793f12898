//! `netpath cluster init` and `netpath node remove`: the etcd store's administration,
//! and the flags every etcd client takes.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::{
    files::one_shot_runtime,
    spec::ClusterSettings,
    store::{
        config_file,
        etcd::{self, EtcdOptions, Keys, DEFAULT_PREFIX},
        model::ClusterConfig,
    },
};

/// How to reach etcd.
#[derive(Args, Clone)]
pub struct EtcdArgs {
    /// Client URLs of the etcd members, comma-separated.
    #[arg(long, visible_alias = "etcd", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix of this cluster.
    #[arg(long, visible_alias = "prefix", default_value = DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// CA certificate (PEM) that signed the etcd servers' certificates.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM), for etcd's --client-cert-auth.
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// Seconds a node stays in the cluster after its agent stops renewing.
    #[arg(long, default_value_t = 20)]
    lease_ttl: i64,
}

impl EtcdArgs {
    pub fn has_endpoints(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    pub fn options(&self) -> Result<EtcdOptions> {
        if self.etcd_endpoints.is_empty() {
            bail!("--etcd-endpoints is required with the etcd store");
        }
        if !(2..=3600).contains(&self.lease_ttl) {
            bail!("--lease-ttl must be 2-3600 seconds, got {}", self.lease_ttl);
        }
        Ok(EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            lease_ttl: self.lease_ttl,
        })
    }
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Write the cluster config once (the same config again is a no-op). The settings
    /// come whole from a file (`--cluster-config`) or from the setting flags.
    Init {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The settings whole: a cluster config (TOML: cluster_cidr, backend, ...,
        /// subnet_len, as `--store gossip` takes) or a spec file (its settings; the
        /// subnet length from its nodes).
        #[arg(long, conflicts_with_all = ["ClusterSettings", "subnet_len"])]
        cluster_config: Option<PathBuf>,
        #[command(flatten)]
        settings: Option<ClusterSettings>,
        /// Prefix length of each node's pod CIDR (default 24).
        #[arg(long)]
        subnet_len: Option<u8>,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Release a node: its liveness record and its pod CIDR reservation. Stop its
    /// agent first: a running agent claims its keys again at once.
    Remove {
        name: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

impl ClusterCmd {
    pub fn run(self) -> Result<bool> {
        let ClusterCmd::Init {
            etcd,
            cluster_config,
            settings,
            subnet_len,
        } = self;
        let config = match (cluster_config, settings) {
            (Some(path), _) => config_file::read(&path)?,
            (None, Some(settings)) => ClusterConfig {
                settings,
                subnet_len: subnet_len.unwrap_or(config_file::DEFAULT_SUBNET_LEN),
            },
            (None, None) => bail!(
                "give the cluster's settings: --cluster-config FILE, or --cluster-cidr and \
                 the other setting flags"
            ),
        };
        let opts = etcd.options()?;
        let created = one_shot_runtime()?.block_on(async {
            let mut client = etcd::connect(&opts).await?;
            etcd::init_cluster(&mut client, &Keys::new(&opts.prefix), &config).await
        })?;
        let verdict = if created {
            "initialized"
        } else {
            "already initialized, same config:"
        };
        println!("{verdict} {}/config", opts.prefix.trim_end_matches('/'));
        Ok(true)
    }
}

impl NodeCmd {
    pub fn run(self) -> Result<bool> {
        let NodeCmd::Remove { name, etcd } = self;
        let opts = etcd.options()?;
        let keys = Keys::new(&opts.prefix);
        let removed = one_shot_runtime()?.block_on(async {
            let mut client = etcd::connect(&opts).await?;
            // A stopped agent's lease lives on until its TTL, so this cannot refuse.
            if etcd::node_alive(&mut client, &keys, &name).await? {
                eprintln!(
                    "warning: node {name}'s lease is still live: if its agent runs, it claims \
                     its keys again at once (stop the agent first)"
                );
            }
            etcd::remove_node(&mut client, &keys, &name).await
        })?;
        if removed.is_empty() {
            println!("node {name}: nothing stored");
        }
        for k in removed {
            println!("removed {k}");
        }
        Ok(true)
    }
}
