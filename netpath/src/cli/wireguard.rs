//! `netpath wireguard`: a node's WireGuard key, and the user-space device process
//! the agent starts where the kernel has no WireGuard.
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::{state::DEFAULT_STATE_ROOT, wireguard};

#[derive(Subcommand)]
pub enum WireguardCmd {
    /// Print the node's public key, making its key pair first if it has none: what
    /// the spec file's `[[nodes]] wireguard_key` holds for it.
    Pubkey {
        #[arg(long)]
        node: String,
        /// The node's state dir (default /run/netpath/<node>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Serve the user-space WireGuard device (started by the agent; not for hands).
    #[command(hide = true)]
    Device {
        #[arg(long, default_value = wireguard::DEVICE)]
        name: String,
        #[arg(long)]
        state_dir: PathBuf,
    },
}

impl WireguardCmd {
    pub fn run(self) -> Result<bool> {
        match self {
            WireguardCmd::Pubkey { node, state_dir } => {
                let dir =
                    state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT).join(&node));
                let pair = wireguard::keys::KeyPair::load_or_create(&dir)?;
                println!("{}", pair.public);
                Ok(true)
            }
            WireguardCmd::Device { name, state_dir } => {
                match wireguard::device::run(&name, &state_dir)? {}
            }
        }
    }
}
