//! Just enough Markdown for the docs test: fenced blocks, inline code spans, links and
//! the anchors GitHub makes. No parser crate: the book's Markdown is plain, and a
//! construct this does not understand should fail the test rather than pass unseen.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// One page of the book (or the README).
pub struct Doc {
    pub path: PathBuf,
    pub text: String,
}

/// A fenced block: its info string, body, and the last non-blank line before it
/// (where a marker such as `<!-- spec-example … -->` sits).
pub struct Fence {
    pub lang: String,
    pub body: String,
    pub before: String,
}

/// A link in prose: its text and target as written.
pub struct Link {
    pub text: String,
    pub target: String,
}

impl Doc {
    pub fn read(path: &Path) -> Doc {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Doc {
            path: path.to_path_buf(),
            text,
        }
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The fenced blocks, in order.
    pub fn fences(&self) -> Vec<Fence> {
        let mut out = Vec::new();
        let mut open: Option<Fence> = None;
        let mut before = String::new();
        for line in self.text.lines() {
            match open.as_mut() {
                Some(f) if line.trim_start().starts_with("```") => {
                    out.push(std::mem::replace(
                        f,
                        Fence {
                            lang: String::new(),
                            body: String::new(),
                            before: String::new(),
                        },
                    ));
                    open = None;
                }
                Some(f) => {
                    f.body.push_str(line);
                    f.body.push('\n');
                }
                None if line.trim_start().starts_with("```") => {
                    open = Some(Fence {
                        lang: line.trim_start()[3..].trim().to_string(),
                        body: String::new(),
                        before: before.clone(),
                    });
                }
                None if !line.trim().is_empty() => before = line.trim().to_string(),
                None => {}
            }
        }
        assert!(
            open.is_none(),
            "{}: a fenced block is never closed",
            self.name()
        );
        out
    }

    /// The text outside fenced blocks, lines kept (fence lines become empty).
    pub fn prose(&self) -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in self.text.lines() {
            if line.trim_start().starts_with("```") {
                inside = !inside;
            } else if !inside {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }

    /// Inline code spans of the prose, a line break inside one read as a space.
    pub fn code_spans(&self) -> Vec<String> {
        split_spans(&self.prose())
            .into_iter()
            .filter_map(|(code, s)| code.then(|| s.replace('\n', " ")))
            .collect()
    }

    /// Links of the prose (not inside code spans); images count as links.
    pub fn links(&self) -> Vec<Link> {
        let mut out = Vec::new();
        for (i, (code, s)) in split_spans(&self.prose()).into_iter().enumerate() {
            // A piece right after a code span that opens with `](` ends a link whose
            // text is that span: `code_links` reads those whole.
            if code || (i > 0 && s.starts_with("](")) {
                continue;
            }
            let mut rest = s.as_str();
            while let Some(i) = rest.find("](") {
                let target_end = rest[i + 2..].find(')').map(|j| i + 2 + j);
                let Some(end) = target_end else { break };
                let start = rest[..i].rfind('[').map_or(0, |j| j + 1);
                out.push(Link {
                    text: rest[start..i].to_string(),
                    target: rest[i + 2..end].trim().to_string(),
                });
                rest = &rest[end..];
            }
        }
        out.extend(code_links(&self.prose()));
        out
    }

    /// The anchors a link may name: GitHub's heading slugs and explicit `<a id>`s.
    pub fn anchors(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        for line in self.prose().lines() {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
                let base = slug(&line[hashes..]);
                let mut s = base.clone();
                let mut n = 0;
                while !out.insert(s.clone()) {
                    n += 1;
                    s = format!("{base}-{n}");
                }
            }
        }
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find("<a id=\"") {
            let id = &rest[i + 7..];
            let end = id.find('"').expect("an <a id=\"…\"> closes its quote");
            out.insert(id[..end].to_string());
            rest = &id[end..];
        }
        out
    }
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text cut at backticks: (is code, text) pieces in order.
fn split_spans(text: &str) -> Vec<(bool, String)> {
    text.split('`')
        .enumerate()
        .map(|(i, s)| (i % 2 == 1, s.to_string()))
        .collect()
}

/// Links written ``[`name`](target)``: the code span is their whole text.
fn code_links(prose: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let mut rest = prose;
    while let Some(i) = rest.find("[`") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("`](") else { break };
        let Some(k) = after[j + 3..].find(')') else {
            break;
        };
        out.push(Link {
            text: format!("`{}`", &after[..j]),
            target: after[j + 3..j + 3 + k].trim().to_string(),
        });
        rest = &after[j + 3 + k..];
    }
    out
}
