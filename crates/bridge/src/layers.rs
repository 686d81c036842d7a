//! The layering rule, checked: no module of the library uses a module of a layer above its own.
//!
//! Reads every source file's code (comments and test code aside) for `crate::` and `super::`
//! paths, resolves each to the module it names, and compares layers (see the table in the crate
//! docs). A module that is not in the table fails too, so a new module must be given a place.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// The layer of a module path (`stage::route`), bottom (0) to top; `None` for an unknown one.
fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or_default();
    let layer = match (top, module) {
        (_, "error" | "headers" | "body" | "json" | "sse") => 0,
        ("config", _) => 1,
        ("upstream" | "fleet" | "observe", _) => 2,
        ("proxy", _) => 5,
        ("stage" | "relay", _) => 3,
        ("dialect" | "engine", _) => 4,
        ("dispatch", _) => 6,
        ("" | "server" | "app" | "admin" | "sim" | "demo" | "layers", _) => 7,
        _ => return None,
    };
    Some(layer)
}

/// The module a source file defines (`src/stage/route.rs` → `stage::route`); `None` for files
/// holding only tests (`*_tests.rs`) and for the binary.
fn module_of(relative: &Path) -> Option<String> {
    let text = relative
        .with_extension("")
        .to_string_lossy()
        .replace('/', "::");
    match text.as_str() {
        "main" => None,
        "lib" => Some(String::new()),
        t if t.ends_with("_tests") => None,
        t => Some(t.to_string()),
    }
}

/// Every module path a piece of code names through `crate::` or `super::`, resolved from
/// `module`; `use crate::{a, b::c}` groups are expanded.
fn named_modules(module: &str, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        // A trailing comment is not code either.
        let line = line.split(" //").next().unwrap_or_default();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let boundary = rest[..at]
                    .chars()
                    .last()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
                rest = &rest[at + prefix.len()..];
                if !boundary {
                    continue;
                }
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let join = |tail: &str| match (base.is_empty(), tail.is_empty()) {
                    (true, _) => tail.to_string(),
                    (false, true) => base.clone(),
                    (false, false) => format!("{base}::{tail}"),
                };
                let after = &rest[path.len()..];
                if let (Some(group), true) = (
                    after.strip_prefix('{'),
                    path.ends_with("::") || path.is_empty(),
                ) {
                    let inner = group.split('}').next().unwrap_or_default();
                    for item in inner.split(',') {
                        let item = item.trim().trim_end_matches("::*");
                        found.push(join(&format!("{path}{item}")));
                    }
                } else {
                    found.push(join(path.trim_end_matches("::")));
                }
            }
        }
    }
    found
}

/// `a::b` → `a`; a top-level module's parent is the crate root.
fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_string())
}

/// The longest prefix of `path` that is one of `modules` (the item's own module).
fn owner<'m>(path: &str, modules: &'m [String]) -> Option<&'m str> {
    modules
        .iter()
        .filter(|m| m.is_empty() || path == m.as_str() || path.starts_with(&format!("{m}::")))
        .max_by_key(|m| m.len())
        .map(String::as_str)
}

/// The uses in `code` (of `module`) that go to a higher layer, as `module -> target`.
fn violations(module: &str, code: &str, modules: &[String]) -> Vec<String> {
    let own = layer(module).unwrap_or_else(|| panic!("module '{module}' has no layer"));
    named_modules(module, code)
        .iter()
        .filter_map(|path| owner(path, modules))
        .filter(|target| !target.is_empty() && *target != module)
        .filter(|target| {
            let theirs = layer(target).unwrap_or_else(|| panic!("module '{target}' has no layer"));
            theirs > own
        })
        .map(|target| {
            format!(
                "{module} (layer {own}) uses {target} (layer {:?})",
                layer(target)
            )
        })
        .collect()
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if let Some(module) = module_of(path.strip_prefix(&root).unwrap()) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Test code may use anything; the rule is for the library's own code.
                    let code = text
                        .split("#[cfg(test)]")
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    files.push((module, code));
                }
            }
        }
    }
    files
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let files = sources();
    let modules: Vec<String> = files.iter().map(|(m, _)| m.clone()).collect();
    assert!(modules.len() > 30, "found only {} modules", modules.len());
    let mut wrong = Vec::new();
    for (module, code) in &files {
        wrong.extend(violations(module, code, &modules));
    }
    assert!(
        wrong.is_empty(),
        "imports going up a layer:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_uses_going_up() {
    let modules: Vec<String> = ["config", "config::live", "proxy", "stage::send", "error"]
        .map(String::from)
        .to_vec();
    let up = "use crate::stage::send::send;\n";
    assert_eq!(violations("config::live", up, &modules).len(), 1);
    let grouped = "use crate::{error, proxy};\n";
    assert_eq!(violations("config::live", grouped, &modules).len(), 1);
    let sibling = named_modules("stage::send", "use super::pick::{park, pick};\n");
    assert_eq!(sibling, ["stage::pick::park", "stage::pick::pick"]);
    let down = "use crate::error::ApiError; // crate::proxy in a comment\n/// crate::stage::send\n";
    assert!(violations("config::live", down, &modules).is_empty());
    assert!(violations("proxy", up, &modules).is_empty());
}
