//! The layers of docs/design.md (Layers), checked: a module imports only from layers below its
//! own, so no arrow runs back up. Unit tests (`tests.rs` files and `mod tests` blocks) may reach
//! anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up; each may import from the rows before its own.
const LAYERS: &[&[&str]] = &[
    &["model", "telemetry"],
    &["error", "config", "files"],
    &["logging", "auth"],
    &["store", "events"],
    &["mail", "interchange"],
    &["chat", "server"],
    &["api"],
    &["cli"],
    &["app"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The file's code outside its unit tests.
fn code_outside_tests(source: &str) -> &str {
    match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    }
}

/// Every natter module the code names (`crate::x`, `use crate::{x, y}`).
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            for item in list[..end].split(',') {
                found.insert(word(item.trim()));
            }
        } else {
            found.insert(word(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" || file.file_name().unwrap() == "tests.rs" {
            continue;
        }
        let own = layer_of(&top).unwrap_or_else(|| {
            panic!("src/{top} is in no layer: add it to LAYERS and docs/design.md")
        });
        let source = std::fs::read_to_string(file).unwrap();
        for module in imported_modules(code_outside_tests(&source)) {
            if module == top {
                continue;
            }
            match layer_of(&module) {
                Some(layer) if layer < own => {}
                _ => wrong.push(format!(
                    "src/{} imports crate::{module}",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run up or across the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_design_page_lists_the_same_layers() {
    let page = include_str!("../docs/design.md");
    let section = page
        .split("## Layers")
        .nth(1)
        .expect("docs/design.md has a Layers section");
    let section = section.split("\n## ").next().unwrap();
    for row in LAYERS {
        for module in *row {
            assert!(
                section.contains(&format!("`{module}`")),
                "docs/design.md, Layers, does not name `{module}`"
            );
        }
    }
}
