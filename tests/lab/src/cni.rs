//! Driving the CNI plugin as a runtime does: the `netpath` binary with CNI_* in
//! its environment and the network configuration on stdin, started inside a lab
//! node's namespace (where runtimes run it).
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::netns;

/// One invocation's environment.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: Option<&'a Path>) -> Self {
        Self {
            command,
            container_id,
            netns,
            ifname: "eth0",
            args: None,
        }
    }
}

/// What the plugin answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub success: bool,
    /// stdout as JSON (Null when empty).
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// The spec error code, when the plugin failed with one.
    pub fn code(&self) -> Option<u64> {
        (!self.success)
            .then(|| self.json["code"].as_u64())
            .flatten()
    }

    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }

    /// Panics with everything the plugin said unless it succeeded.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(
            self.success,
            "{what}: plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// The pod address of the result.
    pub fn ip(&self) -> std::net::Ipv4Addr {
        let a = self.json["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {}", self.stdout));
        a.split('/')
            .next()
            .unwrap()
            .parse()
            .expect("an IPv4 address")
    }
}

/// A minimal network configuration for this plugin.
pub fn conf(version: &str) -> Value {
    json!({ "cniVersion": version, "name": "netpath-test", "type": "netpath" })
}

/// Runs `plugin` (a CNI binary) with `call`'s environment and `stdin` on its
/// stdin, from inside the namespace `node_ns`.
pub fn invoke(plugin: &Path, node_ns: &Path, call: &Call, stdin: &[u8]) -> Result<Reply> {
    let cni_path = plugin.parent().unwrap_or(Path::new("/"));
    let out = netns::run_in(node_ns, || {
        let mut cmd = Command::new(plugin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", call.command)
            .env("CNI_CONTAINERID", call.container_id)
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = call.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if let Some(a) = call.args {
            cmd.env("CNI_ARGS", a);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("run {}", plugin.display()))?;
        // A plugin that exits before reading is an answer too (the reply says why).
        let _ = child.stdin.take().expect("piped").write_all(stdin);
        Ok(child.wait_with_output()?)
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .with_context(|| format!("plugin stdout is not JSON: {stdout:?}"))?
    };
    Ok(Reply {
        success: out.status.success(),
        json,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `invoke` with a JSON configuration.
pub fn run(plugin: &Path, node_ns: &Path, call: &Call, conf: &Value) -> Result<Reply> {
    invoke(plugin, node_ns, call, conf.to_string().as_bytes())
}

/// `conf` with `prevResult` set, as a runtime passes it to the next plugin, to
/// CHECK and to DEL.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
