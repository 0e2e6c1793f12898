//! A spec's record lists cut out of its text, one small document per entry. The
//! toml crate's tree of a whole file costs ~35× the text (10 000 policies: 4 MiB of
//! TOML, a 150 MiB tree), and once freed it leaves the heap fragmented around what
//! the agent keeps: 130 MiB resident for 22 MiB of records. An entry parsed alone
//! costs a few KiB and is freed before the next. Anything the cut cannot place
//! exactly (a quoted header, a list's key outside its entries) makes the caller
//! parse the whole file as before: the cut saves memory, never changes a meaning.
use std::collections::BTreeMap;

/// The lists whose entries are cut out: the ones a cluster holds thousands of.
pub(crate) const LISTS: [&str; 4] = ["services", "namespaces", "pods", "policies"];

/// A spec's text, its record lists taken out.
#[derive(Debug, Default)]
pub(crate) struct Split<'a> {
    /// Everything else, in its order: the settings, `[[nodes]]`, other tables.
    pub rest: String,
    /// Each entry's text (its `[[list]]` header and its sub-tables), by list.
    pub entries: BTreeMap<&'static str, Vec<&'a str>>,
}

/// The cut, or None when there is nothing to cut or a header it cannot read.
pub(crate) fn split(text: &str) -> Option<Split<'_>> {
    let mut out = Split::default();
    let mut strings = Strings::default();
    // The list whose entry is open, and where that entry began.
    let mut open: Option<(&'static str, usize)> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let in_string = strings.inside();
        strings.scan(line);
        if in_string {
            if open.is_none() {
                out.rest.push_str(line);
            }
            continue;
        }
        let Some(header) = header(line)? else {
            if open.is_none() {
                out.rest.push_str(line);
            }
            continue;
        };
        // A header of the open list's own sub-tables stays in its entry.
        if let Some((list, from)) = open {
            if header.first == list && !header.new_entry {
                continue;
            }
            out.entries
                .entry(list)
                .or_default()
                .push(&text[from..start]);
            open = None;
        }
        match LISTS.iter().find(|l| **l == header.first) {
            Some(list) if header.new_entry => open = Some((list, start)),
            // `[policies.x]` outside an entry: only the whole file says what it means.
            Some(_) => return None,
            None => out.rest.push_str(line),
        }
    }
    if let Some((list, from)) = open {
        out.entries.entry(list).or_default().push(&text[from..]);
    }
    (!out.entries.is_empty()).then_some(out)
}

/// One entry's text parsed alone: its value, or None when it does not stand alone
/// as exactly one entry of its list.
pub(crate) fn entry(list: &str, text: &str) -> Option<toml::Value> {
    let mut table: toml::Table = toml::from_str(text).ok()?;
    if table.len() != 1 {
        return None;
    }
    match table.remove(list)? {
        toml::Value::Array(mut a) if a.len() == 1 => a.pop(),
        _ => None,
    }
}

/// A table header: its first key, and whether it opens an entry of that array
/// (`[[first]]`, not `[[first.sub]]`).
struct Header<'a> {
    first: &'a str,
    new_entry: bool,
}

/// Some(None): not a header; None: a header whose first key is not a bare key.
fn header(line: &str) -> Option<Option<Header<'_>>> {
    let t = line.trim_start();
    let Some(after) = t.strip_prefix('[') else {
        return Some(None);
    };
    let (new_entry, inner) = match after.strip_prefix('[') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    let inner = inner.trim_start();
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(inner.len());
    let (first, tail) = inner.split_at(end);
    match tail.trim_start().chars().next() {
        Some('.') if !first.is_empty() => Some(Some(Header {
            first,
            new_entry: false,
        })),
        Some(']') if !first.is_empty() => Some(Some(Header { first, new_entry })),
        _ => None,
    }
}

/// Whether a line ends inside a multi-line string (where `[[x]]` is text, not a
/// header). Single-line strings and comments are skipped so their quotes do not count.
#[derive(Default)]
struct Strings {
    /// The open multi-line string's delimiter.
    open: Option<&'static str>,
}

impl Strings {
    fn inside(&self) -> bool {
        self.open.is_some()
    }

    fn scan(&mut self, line: &str) {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if let Some(delim) = self.open {
                if delim == "\"\"\"" && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if line[i..].starts_with(delim) {
                    // Up to two more quotes may close it: `""""` ends with a quote inside.
                    let q = delim.as_bytes()[0];
                    i += 3;
                    while i < b.len() && b[i] == q && line[i..].starts_with(delim) {
                        i += 1;
                    }
                    self.open = None;
                    continue;
                }
                i += 1;
                continue;
            }
            match b[i] {
                b'#' => return,
                q @ (b'"' | b'\'') => {
                    let delim = if q == b'"' { "\"\"\"" } else { "'''" };
                    if line[i..].starts_with(delim) {
                        self.open = Some(delim);
                        i += 3;
                    } else {
                        i = skip_string(b, i + 1, q);
                    }
                }
                _ => i += 1,
            }
        }
    }
}

/// Past a single-line string that opened before `i` (basic strings have escapes).
fn skip_string(b: &[u8], mut i: usize, q: u8) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 2,
            c if c == q => return i + 1,
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecDraft;

    #[test]
    fn entries_are_cut_with_their_sub_tables_and_the_rest_keeps_its_order() {
        let text = "a = 1\n[[policies]]\n[policies.metadata]\nname = \"p\"\n\
                    [[policies.spec.ingress]]\n[[nodes]]\nname = \"n\"\n\
                    [[ pods ]]\nx = 1\n[other]\nb = 2\n";
        let s = split(text).unwrap();
        assert_eq!(
            s.entries["policies"],
            ["[[policies]]\n[policies.metadata]\nname = \"p\"\n[[policies.spec.ingress]]\n"]
        );
        assert_eq!(s.entries["pods"], ["[[ pods ]]\nx = 1\n"]);
        assert_eq!(s.rest, "a = 1\n[[nodes]]\nname = \"n\"\n[other]\nb = 2\n");
    }

    #[test]
    fn a_header_inside_a_multi_line_string_is_text() {
        let text = "[[policies]]\nx = \"\"\"\n[[pods]]\n\"\"\"\ny = '''\n[[pods]]'''\n\
                    z = \"[[pods]] \\\"\"\n[[pods]]\n";
        let s = split(text).unwrap();
        assert_eq!(s.entries["policies"].len(), 1);
        assert_eq!(s.entries["pods"], ["[[pods]]\n"]);
        assert!(s.entries["policies"][0].contains("'''\n[[pods]]'''"));
    }

    #[test]
    fn what_it_cannot_place_exactly_is_left_to_the_whole_parse() {
        assert!(split("[[\"policies\"]]\n").is_none());
        assert!(split("[[policies]]\n[[nodes]]\n[policies.spec]\n").is_none());
        assert!(split("a = 1\n[[nodes]]\n").is_none(), "nothing to cut");
        // An entry that does not stand alone is refused by `entry`.
        assert!(entry("pods", "[[pods]]\nx = 1\n").is_some());
        assert!(entry("pods", "[[pods]]\n[[pods]]\n").is_none());
        assert!(entry("pods", "[[pods]]\nx = \n").is_none());
    }

    #[test]
    fn a_spec_parsed_entry_by_entry_is_the_spec_parsed_whole() {
        let text = r#"# comment [[policies]]
cluster_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
[[nodes]]
name = "a"
underlay = "192.168.56.11/24"
pod_cidr = "10.244.1.0/24"
[[services]]
namespace = "default"
name = "web"
cluster_ip = "10.96.0.10"
[[services.ports]]
port = 80
[[policies]]
metadata = { namespace = "x", name = "p" }
[policies.spec.podSelector.matchLabels]
app = """multi
[[pods]]
line"""
[[policies.spec.ingress]]
from = [{ ipBlock = { cidr = "10.0.0.0/8" } }]
[[nodes]]
name = "b"
underlay = "192.168.56.12/24"
pod_cidr = "10.244.2.0/24"
[[pods]]
metadata = { namespace = "x", name = "a", labels = { app = "web" } }
status = { podIP = "10.244.1.5" }
[[policies]]
metadata = { namespace = "x", name = "q" }
spec = { ingress = "not a list" }
"#;
        let cut = split(text).expect("a cut");
        assert_eq!(cut.entries["policies"].len(), 2);
        let whole = SpecDraft::from_table(toml::from_str(text).unwrap()).unwrap();
        let by_entry = SpecDraft::parse(text).unwrap();
        assert_eq!(by_entry, whole);
        assert_eq!(by_entry.nodes.len(), 2);
        assert_eq!(by_entry.policies.len(), 1, "one parses, one is named");
        assert_eq!(by_entry.unparsed_records.len(), 1);
        // Valid TOML the cut cannot place is parsed whole, to the same result.
        let odd = text.replace(
            "pod_cidr = \"10.244.2.0/24\"\n",
            "pod_cidr = \"10.244.2.0/24\"\n[policies.spec.podSelector.x]\n",
        );
        assert!(split(&odd).is_none());
        let whole = SpecDraft::from_table(toml::from_str(&odd).unwrap()).unwrap();
        assert_eq!(SpecDraft::parse(&odd).unwrap(), whole);
    }
}
