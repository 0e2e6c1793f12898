//! The command lines the docs show, checked against the real flags: `netpath`'s from
//! its clap definitions, `cargo xtask`'s and the lab's (`netpath-lab`, what
//! `cargo xtask run -- …` and `cargo xtask bench -- …` pass on) read from their clap
//! derive source, since both are binaries this crate cannot link.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use clap::CommandFactory;

/// Long flags per subcommand of a binary: "run" -> {"--once", …}.
pub type Flags = BTreeMap<String, BTreeSet<String>>;

pub struct Known {
    xtask: Flags,
    lab: Flags,
    everything: BTreeSet<String>,
}

impl Known {
    pub fn load(root: &Path) -> Known {
        let xtask = derive_flags(&root.join("xtask/src/main.rs"));
        let lab = derive_flags(&root.join("tests/lab/src/main.rs"));
        for (what, f, must) in [
            ("xtask", &xtask, &["run", "bench", "test"][..]),
            ("the lab", &lab, &["run", "bench"][..]),
        ] {
            for sub in must {
                assert!(
                    f.get(*sub).is_some_and(|s| !s.is_empty()),
                    "found no flags of {what}'s `{sub}`: has its clap source moved? {f:?}"
                );
            }
        }
        let mut everything: BTreeSet<String> = BTreeSet::new();
        collect(&netpath::cli::Cli::command(), &mut everything);
        for f in xtask.values().chain(lab.values()) {
            everything.extend(f.iter().cloned());
        }
        Known {
            xtask,
            lab,
            everything,
        }
    }

    /// Problems with one shown command line (empty: fine, or not ours).
    pub fn check(&self, line: &str) -> Vec<String> {
        let words = strip_prefix(line.split_whitespace().collect());
        let mut bad = Vec::new();
        let mut unknown = |flag: String, known: &BTreeSet<String>, whose: &str| {
            if !known.contains(&flag) && flag != "--help" {
                bad.push(format!("{flag} is not a flag of {whose}"));
            }
        };
        match words.as_slice() {
            ["netpath", rest @ ..] => {
                let mut cmd = netpath::cli::Cli::command();
                let mut whose = "netpath".to_string();
                let mut i = 0;
                while let Some(sub) = rest.get(i).and_then(|w| cmd.find_subcommand(w)).cloned() {
                    whose = format!("{whose} {}", sub.get_name());
                    cmd = sub;
                    i += 1;
                }
                let mut known = BTreeSet::new();
                longs(&cmd, &mut known);
                known.insert("--version".into());
                for f in rest[i..].iter().filter_map(|w| flag(w)) {
                    unknown(f, &known, &whose);
                }
            }
            ["cargo", "xtask", sub, rest @ ..] => {
                let split = rest.iter().position(|w| *w == "--").unwrap_or(rest.len());
                let own = self.xtask.get(*sub).cloned().unwrap_or_default();
                for f in rest[..split].iter().filter_map(|w| flag(w)) {
                    unknown(f, &own, &format!("cargo xtask {sub}"));
                }
                // What follows `--` goes to the lab for run and bench (to cargo test
                // and the VM otherwise, unchecked).
                if let Some(lab) = self.lab.get(*sub) {
                    for f in rest[split..].iter().filter_map(|w| flag(w)) {
                        unknown(f, lab, &format!("netpath-lab {sub}"));
                    }
                }
            }
            ["netpath-lab", sub, rest @ ..] => {
                let own = self.lab.get(*sub).cloned().unwrap_or_default();
                for f in rest.iter().filter_map(|w| flag(w)) {
                    unknown(f, &own, &format!("netpath-lab {sub}"));
                }
            }
            // A flag shown alone (`--keep-pins`, `-- --once`): some command of ours has it.
            [first, ..] if first.starts_with("--") => {
                for f in words.iter().filter_map(|w| flag(w)) {
                    unknown(f, &self.everything, "netpath, cargo xtask or the lab");
                }
            }
            _ => {}
        }
        bad
    }
}

/// Drops what comes before the command: a prompt, sudo, `ip netns exec NAME`.
fn strip_prefix(mut w: Vec<&str>) -> Vec<&str> {
    loop {
        match w.as_slice() {
            ["$" | "sudo" | "-E", ..] => {
                w.remove(0);
            }
            ["ip", "netns", "exec", _, ..] => {
                w.drain(..4);
            }
            _ => return w,
        }
    }
}

/// The long flag a word shows, if it shows one: `[--trace` -> `--trace`,
/// `--metrics-addr=X` -> `--metrics-addr`.
fn flag(word: &str) -> Option<String> {
    let w = word.trim_start_matches(['[', '(']);
    let w = w.split('=').next().unwrap_or(w);
    let w = w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
    let name = w.strip_prefix("--")?;
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then(|| w.to_string())
}

fn longs(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(l) = a.get_long() {
            out.insert(format!("--{l}"));
        }
    }
}

fn collect(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    longs(cmd, out);
    for sub in cmd.get_subcommands() {
        collect(sub, out);
    }
}

/// Long flags of each variant of `enum Cmd` in a clap derive source file: a field after
/// an `#[arg(…long…)]` attribute (named by `long = "…"`, else by the field).
fn derive_flags(path: &Path) -> Flags {
    let src =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let body = src
        .split_once("enum Cmd {")
        .unwrap_or_else(|| panic!("{}: no `enum Cmd`", path.display()))
        .1;
    let mut out = Flags::new();
    let mut variant: Option<String> = None;
    let mut pending: Option<Option<String>> = None;
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with("//") {
            continue;
        }
        if line.starts_with('}') {
            break;
        }
        if line.starts_with("    ") && !line.starts_with("     ") && t.ends_with('{') {
            variant = Some(t.trim_end_matches('{').trim().to_lowercase());
            continue;
        }
        if t.starts_with("#[arg(") {
            let args = t.trim_start_matches("#[arg(");
            if let Some((_, named)) = args.split_once("long = \"") {
                pending = Some(named.split('"').next().map(str::to_string));
            } else if args.split([',', ')']).any(|a| a.trim() == "long") {
                pending = Some(None);
            }
            continue;
        }
        if let (Some(v), Some((field, _))) = (&variant, t.split_once(':')) {
            if let Some(named) = pending.take() {
                let name = named.unwrap_or_else(|| field.trim().replace('_', "-"));
                out.entry(v.clone())
                    .or_default()
                    .insert(format!("--{name}"));
            }
        }
    }
    out
}
