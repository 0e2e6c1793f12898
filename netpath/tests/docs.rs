//! The README and the book under docs/ are kept true by this test: the files they name
//! exist, the reasons they name are the programs' own (and every reason is on the
//! observability page), the flags they show exist, the metrics they name are
//! registered, their links resolve, and their spec examples validate. No root needed.
#[path = "docs/flags.rs"]
mod flags;
#[path = "docs/md.rs"]
mod md;

use std::path::{Path, PathBuf};

use md::Doc;
use netpath::spec::{ClusterSpec, DEFAULT_SPEC};
use netpath_common::{Program, Reason};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// README.md and every page of docs/.
fn docs() -> Vec<Doc> {
    let root = root();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "the book has its pages: {paths:?}");
    paths.insert(0, root.join("README.md"));
    paths.iter().map(|p| Doc::read(p)).collect()
}

/// Fails with every problem found, not only the first.
fn report(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

const REPO_DIRS: [&str; 7] = [
    "netpath/",
    "netpath-common/",
    "netpath-ebpf/",
    "tests/",
    "xtask/",
    "docs/",
    ".ci/",
];

#[test]
fn repository_paths_in_backticks_exist() {
    let root = root();
    let mut problems = Vec::new();
    let mut seen = 0;
    for doc in docs() {
        for span in doc.code_spans() {
            let s = span.trim();
            if s.contains(char::is_whitespace) || !REPO_DIRS.iter().any(|d| s.starts_with(d)) {
                continue;
            }
            seen += 1;
            // `tests/egress.rs::name` names a test in that file.
            let (path, test) = match s.split_once("::") {
                Some((p, t)) => (p, Some(t)),
                None => (s, None),
            };
            let file = root.join(path);
            if !file.exists() {
                problems.push(format!("{}: `{s}` does not exist", doc.name()));
            } else if let Some(t) = test {
                let src = std::fs::read_to_string(&file).unwrap_or_default();
                if !src.contains(&format!("fn {t}(")) {
                    problems.push(format!("{}: `{s}`: no fn {t} in {path}", doc.name()));
                }
            }
        }
    }
    assert!(
        seen > 50,
        "the docs name the repository's files ({seen} seen)"
    );
    report("paths the docs name", problems);
}

/// The rows between a marker's start and its end.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("marker {start}"));
    let from = from + text[from..].find('\n').expect("a line after the marker");
    let to = from
        + text[from..]
            .find(end)
            .unwrap_or_else(|| panic!("marker {end}"));
    &text[from..to]
}

fn observability() -> Doc {
    Doc::read(&root().join("docs/observability.md"))
}

#[test]
fn the_observability_page_lists_every_program_and_reason_as_the_programs_count_them() {
    let page = observability();
    let programs: Vec<String> = between(&page.text, "<!-- programs:", "<!-- /programs -->")
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let want: Vec<String> = Program::ALL.iter().map(|p| p.name().to_string()).collect();
    assert_eq!(programs, want, "docs/observability.md's program list");

    let rows: Vec<String> = between(&page.text, "<!-- reasons:", "<!-- /reasons -->")
        .lines()
        .filter(|l| l.starts_with("| <a id="))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            format!("{} | {}", cells[1], cells[2])
        })
        .collect();
    let want: Vec<String> = Reason::ALL
        .iter()
        .map(|r| {
            let n = r.name();
            let drop = if r.is_drop() { "yes" } else { "no" };
            format!("<a id=\"{n}\"></a>`{n}` | {drop}")
        })
        .collect();
    let mut problems = Vec::new();
    for r in want.iter().filter(|r| !rows.contains(r)) {
        problems.push(format!("missing (or its drop column wrong): {r}"));
    }
    for r in rows.iter().filter(|r| !want.contains(r)) {
        problems.push(format!("not a reason (or its drop column wrong): {r}"));
    }
    if problems.is_empty() && rows != want {
        problems.push(format!(
            "out of Reason::ALL's order; it is:\n{}",
            want.join("\n")
        ));
    }
    report(
        "docs/observability.md's reason table (first two columns, one row per Reason::ALL)",
        problems,
    );

    let index = page
        .text
        .split_once("program × ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .expect("the page says how STATS is indexed: program × N + reason");
    assert_eq!(
        index,
        Reason::COUNT,
        "STATS index = program × Reason::COUNT + reason"
    );
}

#[test]
fn the_drop_prefix_means_a_drop() {
    for r in Reason::ALL {
        assert_eq!(r.is_drop(), r.name().starts_with("drop-"), "{}", r.name());
    }
}

/// Words that start with `drop-` anywhere in a text.
fn drop_words(text: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let mut out = Vec::new();
    for (i, _) in text.match_indices("drop-") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| word(c) || c == '_')
        {
            continue;
        }
        let w: String = text[i..].chars().take_while(|c| word(*c)).collect();
        let w = w.trim_end_matches('-');
        if w != "drop" {
            out.push(w.to_string());
        }
    }
    out
}

#[test]
fn every_reason_the_docs_name_is_a_real_one() {
    let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
    let mut problems = Vec::new();
    let mut linked = 0;
    for doc in docs() {
        for w in drop_words(&doc.text) {
            if !names.contains(&w.as_str()) {
                problems.push(format!("{}: `{w}` is no verdict reason", doc.name()));
            }
        }
        // Reasons are written as links to their row: [`name`](observability.md#name).
        let here = doc.path.ends_with("docs/observability.md");
        for l in doc.links() {
            let Some(text) = l.text.strip_prefix('`').and_then(|t| t.strip_suffix('`')) else {
                continue;
            };
            let (file, anchor) = l.target.split_once('#').unwrap_or((&l.target, ""));
            let to_page = file.ends_with("observability.md") || (file.is_empty() && here);
            if to_page && anchor == text {
                linked += 1;
                if !names.contains(&text) {
                    problems.push(format!("{}: [`{text}`] is no verdict reason", doc.name()));
                }
            }
        }
    }
    assert!(
        linked > 20,
        "reasons are linked to their row ({linked} links seen)"
    );
    report("reason names", problems);
}

#[test]
fn every_flag_shown_exists() {
    let known = flags::Known::load(&root());
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in docs() {
        let mut lines: Vec<String> = doc.code_spans();
        for f in doc.fences() {
            // Continuation lines join their command; comments are not commands.
            let body = f.body.replace("\\\n", " ");
            lines.extend(
                body.lines()
                    .map(|l| l.split(" #").next().unwrap_or(l).to_string()),
            );
        }
        for line in lines {
            if line.contains("--") {
                checked += 1;
            }
            for p in known.check(&line) {
                problems.push(format!("{}: `{}`: {p}", doc.name(), line.trim()));
            }
        }
    }
    assert!(checked > 50, "the docs show command lines ({checked} seen)");
    report("flags the docs show", problems);
}

#[test]
fn every_metric_named_is_registered() {
    let metrics = std::fs::read_to_string(root().join("netpath/src/metrics.rs")).unwrap();
    let mut problems = Vec::new();
    for doc in docs() {
        for (i, _) in doc.text.match_indices("netpath_") {
            let rest = &doc.text[i + "netpath_".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() || rest[name.len()..].starts_with("::") {
                continue;
            }
            let registered = [
                name.as_str(),
                name.trim_end_matches("_total"),
                name.trim_end_matches("_info"),
            ]
            .iter()
            .any(|n| metrics.contains(&format!("\"{n}\"")));
            if !registered {
                problems.push(format!("{}: netpath_{name} is not registered", doc.name()));
            }
        }
    }
    report("metrics the docs name", problems);
}

#[test]
fn relative_links_and_anchors_resolve() {
    let mut problems = Vec::new();
    for doc in docs() {
        let dir = doc.path.parent().unwrap().to_path_buf();
        for l in doc.links() {
            let t = l.target.as_str();
            if t.starts_with("http://") || t.starts_with("https://") || t.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = t.split_once('#').unwrap_or((t, ""));
            let target = if file.is_empty() {
                doc.path.clone()
            } else {
                dir.join(file)
            };
            if !target.exists() {
                problems.push(format!("{}: ({t}): no such file", doc.name()));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if target.extension().is_none_or(|e| e != "md") {
                problems.push(format!("{}: ({t}): an anchor into a non-page", doc.name()));
            } else if !Doc::read(&target).anchors().contains(anchor) {
                problems.push(format!("{}: ({t}): no anchor #{anchor} there", doc.name()));
            }
        }
    }
    report("links", problems);
}

/// A spec example merged into the lab's default spec: its keys replace the default's
/// (so `[[nodes]]` in an example replaces the default nodes).
fn with_default(example: &str) -> Result<ClusterSpec, String> {
    let ex: toml::Table = toml::from_str(example).map_err(|e| format!("TOML: {e}"))?;
    let mut spec: toml::Table = toml::from_str(DEFAULT_SPEC).expect("the default spec");
    spec.extend(ex);
    let text = toml::to_string(&spec).expect("a table serializes");
    ClusterSpec::parse(&text).map_err(|e| e.to_string())
}

#[test]
fn spec_examples_validate() {
    let mut problems = Vec::new();
    let mut pages = Vec::new();
    for doc in docs() {
        for f in doc.fences() {
            if !f.before.starts_with("<!-- spec-example") {
                continue;
            }
            assert_eq!(f.lang, "toml", "{}: a spec example is TOML", doc.name());
            pages.push(doc.path.file_name().unwrap().to_string_lossy().into_owned());
            match with_default(&f.body) {
                Err(e) => problems.push(format!("{}: {e}\n{}", doc.name(), f.body)),
                Ok(spec) => {
                    for s in &spec.services {
                        for p in s.ports.iter() {
                            if p.backend_port(&s.endpoint_ports).is_none() {
                                problems.push(format!(
                                    "{}: service {}/{} port {:?} resolves to no backend port",
                                    doc.name(),
                                    s.namespace,
                                    s.name,
                                    p.name
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    for page in [
        "services.md",
        "bgp.md",
        "masquerade.md",
        "backends.md",
        "stores.md",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} has a spec example");
    }
    report("spec examples", problems);
}

#[test]
fn the_index_links_every_page() {
    let index = Doc::read(&root().join("docs/README.md"));
    let linked: Vec<String> = index.links().into_iter().map(|l| l.target).collect();
    let mut problems = Vec::new();
    for doc in docs().iter().skip(1) {
        let name = doc.path.file_name().unwrap().to_string_lossy().into_owned();
        if name != "README.md" && !linked.iter().any(|t| t.split('#').next() == Some(&name)) {
            problems.push(format!("docs/README.md does not link {name}"));
        }
    }
    report("the book's index", problems);
}
