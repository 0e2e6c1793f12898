//! `netpath apply --spec-file`: a manifest's objects merged into a spec file, each
//! replacing the record of its kind, namespace and name, or added; everything
//! else in the file kept (its comments and layout are not: the file is written
//! anew from what it holds). Written atomically, so agents watching the file
//! never read half of it.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::manifest::{self, Doc, Object};
use crate::{
    policy::ObjectMeta,
    spec::{ServiceSpec, SpecDraft},
};

/// Merges `docs` into the spec file at `path` (or removes them); one line per
/// object says what happened.
pub fn apply(path: &Path, docs: &[Doc], delete: bool) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let (out, lines) =
        apply_text(&text, docs, delete).with_context(|| format!("{}", path.display()))?;
    if out != text {
        write_atomically(path, &out)?;
    }
    Ok(lines)
}

/// The spec text with `docs` merged in (or removed), and what happened to each.
pub fn apply_text(text: &str, docs: &[Doc], delete: bool) -> Result<(String, Vec<String>)> {
    let mut draft = SpecDraft::parse(text)?;
    // Written anew from what parsed, the file would lose these.
    if let Some((_, e)) = draft.unparsed.first() {
        bail!("{e}: fix it first (rewriting the file would lose it)");
    }
    if let Some((_, _, e)) = draft.unparsed_records.first() {
        bail!("{e}: fix it first (rewriting the file would lose it)");
    }
    // Services before the endpoints that go into them.
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| matches!(docs[i].object, Object::Endpoints { .. }));
    let mut lines = vec![String::new(); docs.len()];
    for i in order {
        let d = &docs[i];
        let done = if delete {
            remove(&mut draft, &d.object)
        } else {
            merge(&mut draft, &d.object).with_context(|| format!("{}: nothing applied", d.at))?
        };
        lines[i] = format!("{}: {done}", d.object.describe());
    }
    if !delete {
        // As an agent admits them: a service the cluster would leave out refuses all.
        let (_, left_out) = draft.clone().validate_admitting()?;
        let bad = manifest::services_left_out(docs, &left_out);
        if !bad.is_empty() {
            bail!(
                "nothing applied: the cluster would leave out:\n  {}",
                bad.join("\n  ")
            );
        }
    }
    Ok((toml::to_string(&draft)?, lines))
}

fn id(m: &ObjectMeta) -> (&str, &str) {
    (m.ns(), m.name.as_str())
}

/// `item` in place of the one `same` finds, or added.
fn upsert<T: PartialEq>(list: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) -> &'static str {
    match list.iter_mut().find(|t| same(t)) {
        Some(t) if *t == item => "unchanged",
        Some(t) => {
            *t = item;
            "replaced"
        }
        None => {
            list.push(item);
            "added"
        }
    }
}

fn drop_from<T>(list: &mut Vec<T>, same: impl Fn(&T) -> bool) -> &'static str {
    let before = list.len();
    list.retain(|t| !same(t));
    if list.len() < before {
        "removed"
    } else {
        "not there"
    }
}

fn merge(d: &mut SpecDraft, o: &Object) -> Result<&'static str> {
    Ok(match o {
        Object::Namespace(n) => upsert(&mut d.namespaces, n.clone(), |r| {
            id(&r.metadata) == id(&n.metadata)
        }),
        Object::Pod(p) => upsert(&mut d.pods, p.clone(), |r| {
            id(&r.metadata) == id(&p.metadata)
        }),
        Object::Policy(p) => upsert(&mut d.policies, p.clone(), |r| {
            id(&r.metadata) == id(&p.metadata)
        }),
        Object::Service(s) => {
            let mut s = s.clone();
            // A Service carries no endpoints: it keeps those it had.
            if let Some(old) = d.services.iter().find(|o| same_service(o, &s)) {
                s.endpoints = old.endpoints.clone();
                s.endpoint_ports = old.endpoint_ports.clone();
            }
            upsert(&mut d.services, s.clone(), |o| same_service(o, &s))
        }
        Object::Endpoints {
            namespace,
            service,
            slice,
        } => {
            let Some(s) = d
                .services
                .iter_mut()
                .find(|s| (&s.namespace, &s.name) == (namespace, service))
            else {
                bail!(
                    "no Service {namespace}/{service} in the file or the manifest: \
                     a spec file keeps endpoints in their service"
                );
            };
            if (&s.endpoints, &s.endpoint_ports) == (&slice.endpoints, &slice.ports) {
                "unchanged"
            } else {
                s.endpoints = slice.endpoints.clone();
                s.endpoint_ports = slice.ports.clone();
                "replaced"
            }
        }
    })
}

fn same_service(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    (&a.namespace, &a.name) == (&b.namespace, &b.name)
}

fn remove(d: &mut SpecDraft, o: &Object) -> &'static str {
    let (ns, name) = o.id();
    let named = |m: &ObjectMeta| id(m) == (ns.as_str(), name.as_str());
    match o {
        Object::Namespace(_) => drop_from(&mut d.namespaces, |r| named(&r.metadata)),
        Object::Pod(_) => drop_from(&mut d.pods, |r| named(&r.metadata)),
        Object::Policy(_) => drop_from(&mut d.policies, |r| named(&r.metadata)),
        Object::Service(_) => {
            drop_from(&mut d.services, |s| (&s.namespace, &s.name) == (&ns, &name))
        }
        Object::Endpoints { .. } => {
            match d
                .services
                .iter_mut()
                .find(|s| (&s.namespace, &s.name) == (&ns, &name))
            {
                Some(s) if !s.endpoints.is_empty() || !s.endpoint_ports.is_empty() => {
                    s.endpoints.clear();
                    s.endpoint_ports.clear();
                    "removed"
                }
                _ => "not there",
            }
        }
    }
}

/// Beside the file, then renamed over it: readers see the old file or the new.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.apply-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(fs::metadata(path)?.permissions())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.with_context(|| format!("write {}", path.display()))
}
