//! `netpath apply -f` and `netpath delete -f`: Kubernetes manifests into the store.
//! With etcd, one key per object (the keys a watcher of the API server writes), in
//! one transaction; with `--spec-file`, into that file (`apply_file.rs`). Every
//! document is read and checked first: a bad one refuses the whole apply, and
//! services are checked against the cluster as agents would check them.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use super::{
    apply_file,
    etcd_admin::EtcdArgs,
    manifest::{self, Doc, Object},
};
use crate::{
    files::one_shot_runtime,
    store::etcd::{self, Keys, View, Written},
};

#[derive(Args)]
pub struct ManifestArgs {
    /// A manifest: YAML or JSON, one object, a `kind: List`, or YAML documents
    /// separated by `---` (Namespace, Pod, NetworkPolicy, Service, EndpointSlice).
    /// Repeat for several files: all are checked before anything is written.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The namespace of namespaced objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The spec file to write the objects into (the spec-file store), instead of
    /// etcd: rewritten whole and atomically, everything else in it kept.
    #[arg(long, conflicts_with = "etcd_endpoints")]
    spec_file: Option<PathBuf>,
    #[command(flatten)]
    etcd: EtcdArgs,
}

#[derive(Args)]
pub struct ApplyCmd {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Remove the manifest's objects instead (as `netpath delete -f`).
    #[arg(long)]
    delete: bool,
}

#[derive(Args)]
pub struct DeleteCmd {
    #[command(flatten)]
    manifest: ManifestArgs,
}

impl ApplyCmd {
    pub fn run(self) -> Result<bool> {
        self.manifest.run(self.delete)
    }
}

impl DeleteCmd {
    pub fn run(self) -> Result<bool> {
        self.manifest.run(true)
    }
}

impl ManifestArgs {
    fn run(self, delete: bool) -> Result<bool> {
        if self.spec_file.is_none() && !self.etcd.has_endpoints() {
            bail!("say where to write: --etcd-endpoints (with --etcd-prefix) or --spec-file");
        }
        let docs = manifest::read_all(&self.files, &self.namespace)?;
        let lines = match &self.spec_file {
            Some(path) => apply_file::apply(path, &docs, delete)?,
            None => to_etcd(&self.etcd, &docs, delete)?,
        };
        for l in lines {
            println!("{l}");
        }
        Ok(true)
    }
}

/// The key an object is kept under.
pub fn key_of(keys: &Keys, o: &Object) -> String {
    let (ns, name) = o.id();
    match o {
        Object::Namespace(_) => keys.namespace(&name),
        Object::Pod(_) => keys.pod(&ns, &name),
        Object::Policy(_) => keys.policy(&ns, &name),
        Object::Service(_) => keys.service(&ns, &name),
        Object::Endpoints { .. } => keys.endpoint_slice(&ns, &name),
    }
}

/// The value kept: records as Kubernetes objects (with their kind), services and
/// endpoints as netpath's records.
pub fn value_of(o: &Object) -> Vec<u8> {
    fn with_kind(r: &impl Serialize, api: &str, kind: &str) -> Vec<u8> {
        let mut v = serde_json::to_value(r).expect("a record serializes");
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), api.into());
            m.insert("kind".into(), kind.into());
        }
        serde_json::to_vec(&v).expect("JSON serializes")
    }
    match o {
        Object::Namespace(n) => with_kind(n, "v1", "Namespace"),
        Object::Pod(p) => with_kind(p, "v1", "Pod"),
        Object::Policy(p) => with_kind(p, "networking.k8s.io/v1", "NetworkPolicy"),
        Object::Service(s) => serde_json::to_vec(s).expect("a service serializes"),
        Object::Endpoints { slice, .. } => serde_json::to_vec(slice).expect("a slice serializes"),
    }
}

fn to_etcd(args: &EtcdArgs, docs: &[Doc], delete: bool) -> Result<Vec<String>> {
    let opts = args.options()?;
    let keys = Keys::new(&opts.prefix);
    let writes: Vec<(String, Option<Vec<u8>>)> = docs
        .iter()
        .map(|d| {
            (
                key_of(&keys, &d.object),
                (!delete).then(|| value_of(&d.object)),
            )
        })
        .collect();
    let done = one_shot_runtime()?.block_on(async {
        let mut client = etcd::connect(&opts).await?;
        if !delete {
            let view = etcd::read_view(&mut client, &keys).await?;
            check_cluster(&keys, view, docs, &writes)?;
        }
        anyhow::Ok(etcd::write_keys(&mut client, &writes).await?)
    })?;
    Ok(docs
        .iter()
        .zip(&writes)
        .zip(done)
        .map(|((d, (key, _)), w)| {
            let verb = match w {
                Written::Created => "created",
                Written::Changed => "changed",
                Written::Unchanged => "unchanged",
                Written::Removed => "removed",
                Written::Absent => "not there",
            };
            format!("{}: {verb} ({key})", d.object.describe())
        })
        .collect())
}

/// The view with the writes applied, as every agent would build its spec: what
/// it would leave out of the objects applied refuses them all.
fn check_cluster(
    keys: &Keys,
    mut view: View,
    docs: &[Doc],
    writes: &[(String, Option<Vec<u8>>)],
) -> Result<()> {
    for (k, v) in writes {
        view.apply(keys, k, v.as_deref(), i64::MAX);
    }
    let mut bad: Vec<String> = writes
        .iter()
        .filter_map(|(k, _)| view.refused.get(k).map(|why| format!("{k}: {why}")))
        .collect();
    match view.spec(None) {
        Ok((_, left_out)) => bad.extend(manifest::services_left_out(docs, &left_out)),
        Err(e) if docs.iter().any(|d| manifest::is_service(&d.object)) => eprintln!(
            "warning: services not checked against the cluster ({e}); each agent checks them"
        ),
        Err(_) => {}
    }
    if !bad.is_empty() {
        bail!(
            "nothing applied: the cluster would leave out:\n  {}",
            bad.join("\n  ")
        );
    }
    Ok(())
}
