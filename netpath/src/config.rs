//! The agent's configuration file (TOML).
use std::path::{Path, PathBuf};

use netpath_common::RedirectMode;
use serde::Deserialize;

use crate::datapath::DEFAULT_BPFFS_ROOT;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field} = {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Redirect {
    Peer,
    Plain,
}

impl From<Redirect> for RedirectMode {
    fn from(r: Redirect) -> Self {
        match r {
            Redirect::Peer => RedirectMode::Peer,
            Redirect::Plain => RedirectMode::Plain,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name; also the directory of its pins.
    pub node: String,
    /// bpffs directory holding one sub-directory per node.
    #[serde(default = "default_root")]
    pub bpffs_root: PathBuf,
    /// How frames are handed to local pods.
    #[serde(default = "default_redirect")]
    pub redirect: Redirect,
}

fn default_root() -> PathBuf {
    PathBuf::from(DEFAULT_BPFFS_ROOT)
}

fn default_redirect() -> Redirect {
    Redirect::Peer
}

impl AgentConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ok_name = !self.node.is_empty()
            && self.node.len() <= 32
            && self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return Err(ConfigError::Invalid {
                field: "node",
                value: self.node.clone(),
                why: "must be 1-32 characters of [A-Za-z0-9_-]",
            });
        }
        if !self.bpffs_root.is_absolute() {
            return Err(ConfigError::Invalid {
                field: "bpffs_root",
                value: self.bpffs_root.display().to_string(),
                why: "must be an absolute path",
            });
        }
        Ok(())
    }

    pub fn pin_dir(&self) -> PathBuf {
        crate::datapath::node_dir(&self.bpffs_root, &self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = AgentConfig::parse("node = \"n1\"").unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(c.redirect, Redirect::Peer);
        assert_eq!(c.pin_dir(), PathBuf::from("/sys/fs/bpf/netpath/n1"));
    }

    #[test]
    fn bad_node_name_names_the_field() {
        let e = AgentConfig::parse("node = \"a/b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node") && e.contains("a/b"), "{e}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = AgentConfig::parse("node = \"n\"\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_redirect_mode_is_rejected() {
        let e = AgentConfig::parse("node = \"n\"\nredirect = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fast") || e.contains("variant"), "{e}");
    }

    #[test]
    fn relative_root_is_rejected() {
        let e = AgentConfig::parse("node = \"n\"\nbpffs_root = \"rel\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bpffs_root"), "{e}");
    }
}
