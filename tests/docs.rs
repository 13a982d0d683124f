//! The documentation's links: every relative link in README.md and docs/*.md points at a file
//! that exists and, where it names an anchor, at a heading of that file, with the anchors GitHub
//! makes (lowercase, spaces to `-`, punctuation removed, `-1`, `-2` for repeated headings).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// README.md and every Markdown page in docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// A line with its inline code spans (`...`) removed: a link there is only text.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The anchor GitHub gives a heading's text.
fn anchor(heading: &str) -> String {
    // A link in a heading shows its text only.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(start) = rest.find("](") {
        text.push_str(&rest[..start]);
        rest = &rest[start + 2..];
        rest = rest.find(')').map_or("", |end| &rest[end + 1..]);
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a Markdown page's headings.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(&line[hashes..]);
        let mut name = base.clone();
        let mut n = 0;
        while seen.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        seen.insert(name);
    }
    seen
}

/// The targets of the inline links and images on a page, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find(')') else { break };
            targets.push(rest[..end].trim().to_string());
            rest = &rest[end + 1..];
        }
    }
    targets
}

#[test]
fn github_anchors_follow_its_rules() {
    assert_eq!(
        anchor(" Restoring the package's data"),
        "restoring-the-packages-data"
    );
    assert_eq!(
        anchor(" Moving the data: import-chatty"),
        "moving-the-data-import-chatty"
    );
    assert_eq!(anchor(" The PostgreSQL mirror"), "the-postgresql-mirror");
    let repeated = anchors("# Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n");
    assert_eq!(repeated, HashSet::from(["notes".into(), "notes-1".into()]));
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(repo("")).unwrap().display().to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{name}: {target}: no file {}", file.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let Ok(linked) = std::fs::read_to_string(&file) else {
                    broken.push(format!(
                        "{name}: {target}: an anchor into a file that is not text"
                    ));
                    continue;
                };
                if !anchors(&linked).contains(fragment) {
                    broken.push(format!("{name}: {target}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(checked > 0, "no relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The paths in the first column of the README's code map, as `src/chat/`, `src/app.rs`.
fn code_map_paths(readme: &str) -> Vec<String> {
    let map = readme
        .split("## Architecture")
        .nth(1)
        .and_then(|section| section.split("```").nth(1))
        .expect("README.md has a code map in its Architecture section");
    let (mut top, mut parent) = (String::new(), String::new());
    let mut paths = Vec::new();
    for line in map.lines().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        if indent > 4 {
            continue; // a description carried onto the next line
        }
        let first_column = line.trim_start().split("  ").next().unwrap();
        for name in first_column.split(", ") {
            let path = match indent {
                0 => name.to_owned(),
                2 => format!("{top}{name}"),
                _ => format!("{parent}{name}"),
            };
            match indent {
                0 => top = path.clone(),
                2 => parent = path.clone(),
                _ => {}
            }
            paths.push(path);
        }
    }
    paths
}

#[test]
fn the_readme_code_map_names_every_part_of_src_and_nothing_else() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let paths = code_map_paths(&readme);
    let missing: Vec<&String> = paths.iter().filter(|p| !repo(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "the code map names paths that do not exist: {missing:?}"
    );
    let unmapped: Vec<String> = std::fs::read_dir(repo("src"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let slash = if entry.path().is_dir() { "/" } else { "" };
            format!("src/{}{slash}", entry.file_name().to_string_lossy())
        })
        .filter(|path| !paths.contains(path))
        .collect();
    assert!(unmapped.is_empty(), "the code map leaves out {unmapped:?}");
}
