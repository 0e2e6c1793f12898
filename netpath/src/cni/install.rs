//! `netpath install-cni`: the plugin binary and a conflist where runtimes look.
use std::path::{Path, PathBuf};

use serde_json::json;

pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Sorts early, so runtimes that take the first conflist take this one.
pub const CONFLIST: &str = "10-netpath.conflist";

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// The network's name in the conflist.
    pub network: String,
    /// Pin the plugin to one node's state (otherwise it finds it by namespace).
    pub node: Option<String>,
    pub state_root: Option<PathBuf>,
}

/// What was written, so it can be removed exactly.
#[derive(Debug, Clone)]
pub struct Installed {
    pub binary: PathBuf,
    pub conflist: PathBuf,
}

/// The conflist text for `o`.
pub fn conflist(o: &InstallOptions) -> serde_json::Value {
    let mut plugin = json!({ "type": "netpath" });
    if let Some(n) = &o.node {
        plugin["node"] = n.clone().into();
    }
    if let Some(r) = &o.state_root {
        plugin["stateRoot"] = r.display().to_string().into();
    }
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": o.network,
        "plugins": [plugin],
    })
}

/// Writes `<bin dir>/netpath` (a copy of `binary`) and `<conf dir>/10-netpath.conflist`,
/// each through a temporary file and a rename: a runtime never sees half a file.
pub fn install(binary: &Path, o: &InstallOptions) -> std::io::Result<Installed> {
    let ctx = |what: &str, p: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    for d in [&o.bin_dir, &o.conf_dir] {
        std::fs::create_dir_all(d).map_err(|e| ctx("create", d, e))?;
    }
    let bin = o.bin_dir.join("netpath");
    let tmp = o.bin_dir.join(".netpath.tmp");
    std::fs::copy(binary, &tmp).map_err(|e| ctx("copy the plugin to", &tmp, e))?;
    std::fs::rename(&tmp, &bin).map_err(|e| ctx("install", &bin, e))?;
    let conf = o.conf_dir.join(CONFLIST);
    let tmp = o.conf_dir.join(format!(".{CONFLIST}.tmp"));
    let text = serde_json::to_string_pretty(&conflist(o)).expect("json");
    std::fs::write(&tmp, text + "\n").map_err(|e| ctx("write", &tmp, e))?;
    std::fs::rename(&tmp, &conf).map_err(|e| ctx("install", &conf, e))?;
    Ok(Installed {
        binary: bin,
        conflist: conf,
    })
}
