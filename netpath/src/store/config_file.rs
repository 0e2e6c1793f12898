//! The cluster's settings as one file, for the stores nodes join: `netpath cluster
//! init --cluster-config FILE` (etcd) and `netpath agent --store gossip
//! --cluster-config FILE`. Either a cluster config (the settings and `subnet_len`) or
//! the spec file a spec-file user already has: its settings are taken whole, its
//! nodes and services ignored, `subnet_len` taken from its nodes' pod CIDRs. Whole,
//! so no setting is lost on the way (a copy flag by flag once left out BGP's).
use std::path::{Path, PathBuf};

use super::model::ClusterConfig;
use crate::spec::{SpecDraft, SpecError};

/// A node's pod CIDR length when the file says nothing (`cluster init`'s default).
pub const DEFAULT_SUBNET_LEN: u8 = 24;

/// Keys only a spec file has: with any of them, the file is read as a spec.
const SPEC_KEYS: [&str; 3] = ["nodes", "services", "bpffs_root"];

/// Reads and checks the file at `path`; errors name the file and the field.
pub fn read(path: &Path) -> Result<ClusterConfig, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|error| SpecError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&text).map_err(|e| match e {
        SpecError::Parse { message, .. } => SpecError::Parse {
            path: path.to_path_buf(),
            message,
        },
        SpecError::Invalid { field, value, why } => SpecError::Parse {
            path: path.to_path_buf(),
            message: SpecError::Invalid { field, value, why }.to_string(),
        },
        other => other,
    })
}

/// A cluster config or a spec file's text, checked.
pub fn parse(text: &str) -> Result<ClusterConfig, SpecError> {
    let mut top: toml::Table = toml::from_str(text).map_err(parse_error)?;
    let subnet_len = match top.remove("subnet_len") {
        None => None,
        Some(v) => Some(
            v.try_into::<u8>()
                .map_err(|e| parse_error(format!("subnet_len: {e}")))?,
        ),
    };
    let config = if SPEC_KEYS.iter().any(|k| top.contains_key(*k)) {
        let draft = SpecDraft::from_table(top)?;
        let subnet_len = match subnet_len {
            Some(len) => len,
            None => nodes_subnet_len(&draft)?,
        };
        ClusterConfig {
            settings: draft.settings,
            subnet_len,
        }
    } else {
        ClusterConfig {
            settings: toml::Value::Table(top).try_into().map_err(parse_error)?,
            subnet_len: subnet_len.unwrap_or(DEFAULT_SUBNET_LEN),
        }
    };
    config.validate()?;
    Ok(config)
}

/// The one length the spec's nodes' pod CIDRs share.
fn nodes_subnet_len(draft: &SpecDraft) -> Result<u8, SpecError> {
    let mut lens = draft.nodes.iter().map(|n| n.pod_cidr.prefix);
    let Some(first) = lens.next() else {
        return Ok(DEFAULT_SUBNET_LEN);
    };
    if let Some(other) = lens.find(|l| *l != first) {
        return Err(SpecError::Invalid {
            field: "subnet_len".into(),
            value: format!("/{first} and /{other}"),
            why: "the nodes' pod CIDRs differ in length: give subnet_len".into(),
        });
    }
    Ok(first)
}

fn parse_error(message: impl std::fmt::Display) -> SpecError {
    SpecError::Parse {
        path: PathBuf::from("<cluster config>"),
        message: message.to_string().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Routing, DEFAULT_SPEC};

    #[test]
    fn a_spec_file_gives_its_settings_whole_and_its_nodes_subnet_length() {
        let text = DEFAULT_SPEC.replace(
            "cluster_cidr",
            "routing = \"bgp\"\nasn = 65001\ncluster_cidr",
        );
        assert_ne!(text, DEFAULT_SPEC);
        let c = parse(&text).unwrap();
        let spec = crate::spec::ClusterSpec::parse(&text).unwrap();
        assert_eq!(c.settings, spec.settings, "every setting, none left out");
        assert_eq!(c.settings.routing, Routing::Bgp);
        assert_eq!(c.settings.asn, 65001);
        assert_eq!(c.subnet_len, spec.nodes[0].pod_cidr.prefix);
    }

    #[test]
    fn a_cluster_config_reads_as_the_gossip_store_takes_it() {
        let c = parse("cluster_cidr = \"10.244.0.0/16\"\nsubnet_len = 26\nvni = 7\n").unwrap();
        assert_eq!((c.subnet_len, c.settings.vni), (26, 7));
        let c = parse("cluster_cidr = \"10.244.0.0/16\"\n").unwrap();
        assert_eq!(c.subnet_len, DEFAULT_SUBNET_LEN);
    }

    #[test]
    fn mistakes_name_their_field() {
        let e = parse("cluster_cidr = \"10.244.0.0/16\"\nsubnet_len = 4\n").unwrap_err();
        assert!(e.to_string().contains("subnet_len"), "{e}");
        let e = parse("cluster_cidr = \"10.244.0.0/16\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let mixed = "cluster_cidr = \"10.244.0.0/16\"\n\
            [[nodes]]\nname = \"a\"\nunderlay = \"192.168.1.1/24\"\npod_cidr = \"10.244.1.0/24\"\n\
            [[nodes]]\nname = \"b\"\nunderlay = \"192.168.1.2/24\"\npod_cidr = \"10.244.4.0/22\"\n";
        let e = parse(mixed).unwrap_err();
        assert!(e.to_string().contains("subnet_len"), "{e}");
        let e = read(Path::new("/nonexistent/cluster.toml")).unwrap_err();
        assert_eq!(
            e.to_string().matches("No such file").count(),
            1,
            "the cause once: {e}"
        );
    }
}
