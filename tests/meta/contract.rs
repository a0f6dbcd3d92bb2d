//! Every reference to the behaviour contract resolves.
//!
//! `docs/contract.md` is rendered by rustdoc as the module `redial::contract`, and
//! the docs link into it with intra-doc links such as
//! `[D7](crate::contract#d7-a-finished-stop-means-nothing-is-left)`. Rustdoc checks
//! that `crate::contract` exists, but not the part after `#`. This test does: it
//! derives the anchor of every heading of docs/contract.md with rustdoc's rule, and
//! checks every `contract#…` link in the sources, every `#…` link inside the
//! contract and every `contract.md#…` link in the Markdown files against them.
//!
//! It also checks that nothing cites a specification the repository does not have.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Rustdoc's heading anchors: a heading's text (code spans included, other markup
/// left out), keeping letters, digits, `-` and `_` (ASCII ones lowercased), turning
/// each ASCII whitespace character into `-` and dropping everything else. A
/// repeated anchor gets `-1`, `-2`, … (rustdoc's `IdMap::derive`).
fn rustdoc_slug(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(if c.is_ascii() {
                    c.to_ascii_lowercase()
                } else {
                    c
                })
            } else if c.is_ascii_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// GitHub's rule, for the same headings read on GitHub: lowercase, letters,
/// digits, `-` and `_` kept, spaces to `-`, everything else dropped.
fn github_slug(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c)
            } else if c == ' ' {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// A heading's text as rustdoc sees it: without the markup of code spans,
/// emphasis and links (their text stays).
fn heading_text(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' | '*' => {}
            '[' => {}
            ']' if chars.peek() == Some(&'(') => {
                // Skip the link's destination.
                for d in chars.by_ref() {
                    if d == ')' {
                        break;
                    }
                }
            }
            ']' => {}
            _ => out.push(c),
        }
    }
    out
}

/// The headings of a Markdown file (ATX headings outside fenced code), with the
/// anchor rustdoc gives each.
fn headings(markdown: &str) -> Vec<(String, String)> {
    let mut in_fence = false;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let text = heading_text(line[hashes..].trim().trim_end_matches('#').trim());
        let slug = rustdoc_slug(&text);
        let anchor = match seen.get_mut(&slug) {
            None => {
                seen.insert(slug.clone(), 1);
                slug
            }
            Some(n) => {
                let derived = format!("{slug}-{n}");
                *n += 1;
                derived
            }
        };
        out.push((text, anchor));
    }
    out
}

fn contract() -> String {
    fs::read_to_string(root().join("docs/contract.md")).expect("docs/contract.md exists")
}

fn anchors() -> BTreeSet<String> {
    headings(&contract()).into_iter().map(|(_, a)| a).collect()
}

/// Files under `dir` (recursively) whose name ends with one of `extensions`.
fn files(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("readable").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "corpus" | "artifacts") {
                files(&path, extensions, out);
            }
        } else if extensions.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// The anchors of the Markdown links in `text` whose destination is `target`
/// followed by `#` and an anchor: `](<target>#anchor)`, with the line of each.
fn links_to<'t>(text: &'t str, targets: &[&str]) -> Vec<(usize, &'t str)> {
    let mut out = Vec::new();
    for target in targets {
        let prefix = format!("]({target}#");
        let mut from = 0;
        while let Some(i) = text[from..].find(&prefix) {
            let start = from + i + prefix.len();
            let len = text[start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(text.len() - start);
            let line = text[..start].lines().count();
            out.push((line, &text[start..start + len]));
            from = start;
        }
    }
    out
}

#[test]
fn the_contract_has_stable_anchors() {
    let headings = headings(&contract());
    let mut problems = Vec::new();
    for (text, anchor) in &headings {
        if github_slug(text) != *anchor {
            problems.push(format!(
                "heading {text:?}: rustdoc's anchor {anchor:?} is not GitHub's {:?}; \
                 keep headings to plain words so both agree",
                github_slug(text)
            ));
        }
        if text.contains("--") || text.contains("...") || text.contains('\'') {
            problems.push(format!(
                "heading {text:?}: rustdoc's smart punctuation would change its anchor"
            ));
        }
        if anchor.ends_with(|c: char| c.is_ascii_digit()) && anchor.contains('-') {
            let base = anchor.rsplit_once('-').unwrap().0;
            if headings.iter().any(|(_, a)| a == base) {
                problems.push(format!("heading {text:?} repeats an earlier one"));
            }
        }
    }
    // The anchors the docs rely on most.
    for expected in [
        "vocabulary",
        "states",
        "state-diagram",
        "transitions",
        "reports-and-identity",
        "bad-input",
        "counting",
        "failed-attempts",
        "waiter-thresholds",
        "counters",
        "retry-policy",
        "backoff",
        "jitter",
        "differences-from-twisted",
        "d1-identity",
        "d2-a-connection-rejected-by-prepare-is-closed",
        "d3-a-connection-lost-while-preparing-is-a-failed-attempt",
        "d4-stop-while-preparing-closes-the-connection",
        "d5-stop-before-start-cancels-the-waiters",
        "d6-restarting-waits-for-whatever-disconnecting-waited-for",
        "d7-a-finished-stop-means-nothing-is-left",
        "d8-no-re-entrancy",
        "beyond-twisted",
        "giving-up",
        "obligations-of-the-driver",
        "invariants",
    ] {
        if !headings.iter().any(|(_, a)| a == expected) {
            problems.push(format!("no heading has the anchor #{expected}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_link_into_the_contract_names_one_of_its_headings() {
    let anchors = anchors();
    let mut broken = Vec::new();

    // Intra-doc links in the Rust sources: `crate::contract#…`, `redial::contract#…`,
    // and `contract#…` from the crate root.
    let mut sources = Vec::new();
    for dir in ["src", "devkit/src", "tests", "examples", "benches"] {
        files(&root().join(dir), &[".rs"], &mut sources);
    }
    let mut checked = 0;
    for path in &sources {
        let text = fs::read_to_string(path).expect("readable");
        let targets = [
            "crate::contract",
            "redial::contract",
            "self::contract",
            "contract",
        ];
        for (line, anchor) in links_to(&text, &targets) {
            checked += 1;
            if !anchors.contains(anchor) {
                broken.push(format!("{}:{line}: #{anchor}", path.display()));
            }
        }
    }
    assert!(
        checked >= 20,
        "expected the sources to link into the contract ({checked} links found)"
    );

    // Links inside the contract, and from the other Markdown files.
    let text = contract();
    for (line, anchor) in links_to(&text, &[""]) {
        if !anchors.contains(anchor) {
            broken.push(format!("docs/contract.md:{line}: #{anchor}"));
        }
    }
    let mut markdown = Vec::new();
    files(&root(), &[".md"], &mut markdown);
    for path in &markdown {
        let text = fs::read_to_string(path).expect("readable");
        // The driver guide (`redial::guide`) links into the contract with rustdoc's paths.
        let targets = [
            "docs/contract.md",
            "contract.md",
            "../docs/contract.md",
            "crate::contract",
            "redial::contract",
        ];
        for (line, anchor) in links_to(&text, &targets) {
            if !anchors.contains(anchor) {
                broken.push(format!("{}:{line}: #{anchor}", path.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to headings docs/contract.md does not have (its anchors are {anchors:?}):\n{}",
        broken.join("\n")
    );
}

#[test]
fn nothing_cites_a_specification_the_repository_does_not_have() {
    // Built at run time, so that this file does not match itself.
    let spec = ["S", "PEC"].concat();
    let section = '\u{a7}';
    let mut texts = Vec::new();
    for dir in [
        "src", "devkit", "tests", "examples", "benches", "docs", "fuzz", ".ci",
    ] {
        files(
            &root().join(dir),
            &[".rs", ".md", ".trace", ".toml", "run"],
            &mut texts,
        );
    }
    for name in ["README.md", "CHANGELOG.md", "BENCHMARKS.md", "Cargo.toml"] {
        texts.push(root().join(name));
    }
    let mut found = Vec::new();
    for path in &texts {
        let text = fs::read_to_string(path).expect("readable");
        for (n, line) in text.lines().enumerate() {
            let cites_spec = line.match_indices(&spec).any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = line[i + spec.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if cites_spec || line.contains(section) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "these lines cite a specification by section; the repository's is the behaviour \
         contract: link `crate::contract#<anchor>` in rustdoc, or name docs/contract.md \
         and the section elsewhere:\n{}",
        found.join("\n")
    );
}

/// The driver guide, `docs/driver-guide.md` (rendered as `redial::guide`): its
/// headings keep the same anchor on docs.rs and GitHub, and its own `#…` links and
/// every `guide#…` link in the sources name one of them.
#[test]
fn every_link_into_the_guide_names_one_of_its_headings() {
    let guide = fs::read_to_string(root().join("docs/driver-guide.md"))
        .expect("docs/driver-guide.md exists");
    let headings = headings(&guide);
    let mut broken = Vec::new();
    for (text, anchor) in &headings {
        if github_slug(text) != *anchor {
            broken.push(format!(
                "heading {text:?}: rustdoc's anchor {anchor:?} is not GitHub's"
            ));
        }
    }
    let anchors: BTreeSet<&str> = headings.iter().map(|(_, a)| a.as_str()).collect();
    for (line, anchor) in links_to(&guide, &[""]) {
        if !anchors.contains(anchor) {
            broken.push(format!("docs/driver-guide.md:{line}: #{anchor}"));
        }
    }
    let mut sources = Vec::new();
    for dir in ["src", "examples"] {
        files(&root().join(dir), &[".rs"], &mut sources);
    }
    let mut checked = 0;
    for path in &sources {
        let text = fs::read_to_string(path).expect("readable");
        for (line, anchor) in links_to(&text, &["crate::guide", "redial::guide", "guide"]) {
            checked += 1;
            if !anchors.contains(anchor) {
                broken.push(format!("{}:{line}: #{anchor}", path.display()));
            }
        }
    }
    assert!(
        checked >= 3,
        "expected the sources to link into the guide ({checked} links found)"
    );
    assert!(
        broken.is_empty(),
        "links to headings docs/driver-guide.md does not have (its anchors are {anchors:?}):\n{}",
        broken.join("\n")
    );
}
