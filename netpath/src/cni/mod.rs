//! The CNI plugin (type `netpath`, spec 1.1.0): the `netpath` binary run with
//! `CNI_COMMAND` set. Results and errors go to stdout as the spec's JSON; logs go
//! to stderr (or the config's `logFile`), never to stdout.
mod commands;
mod conf;
pub mod install;
mod invocation;
mod node;
mod result;
mod verify;

use std::{io::Read, process::ExitCode};

pub use conf::{NetConf, SUPPORTED_VERSIONS};

/// Spec error codes (CNI 1.1.0 §"Error"), and ours from 100 up.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const BAD_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const UNDECODABLE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The node's pod CIDR has no free address.
    pub const NO_FREE_ADDRESS: u32 = 100;
    /// CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 101;
    /// Wiring the pod (netlink, maps) failed.
    pub const WIRING_FAILED: u32 = 102;
}

/// An error as the spec prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl std::fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    fn to_json(&self, version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

pub type CniResult<T> = Result<T, CniError>;

/// Whether this process was started as a CNI plugin.
pub fn invoked() -> bool {
    std::env::var_os("CNI_COMMAND").is_some()
}

/// Runs the plugin: reads the config from stdin, the rest from the environment.
pub fn main() -> ExitCode {
    let mut input = Vec::new();
    let read = std::io::stdin().read_to_end(&mut input);
    let env = conf::Env::from_process();
    let (version, outcome) = match read {
        Err(e) => (
            conf::LATEST.to_string(),
            Err(CniError::new(
                code::IO_FAILURE,
                "cannot read the network configuration from stdin",
            )
            .with_details(e)),
        ),
        Ok(_) => commands::run(&env, &input),
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::warn!(command = env.command.as_deref().unwrap_or(""), "{e}");
            println!("{}", e.to_json(&version));
            ExitCode::from(1)
        }
    }
}
