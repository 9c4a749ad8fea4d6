//! No module imports a module that imports it back, in any crate of the workspace.
//!
//! Each `.rs` file under a crate's `src/` is a module (`a/mod.rs` is `a`). A module depends on
//! another when it names it through `crate::…` or `super::…` (in a `use` or a path). Names of
//! a module's own ancestors (the crate root's error type, a parent's re-exports) are not
//! counted: a parent declares its children, and a child may use what the parent exposes.
//! Test modules (`#[cfg(test)] mod tests { … }` at the end of a file) are left out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

type ModPath = Vec<String>;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The module graph of one crate: module → the modules it names.
fn graph(krate: &str) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let src = root.join(krate).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mods: BTreeMap<ModPath, PathBuf> = all
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let crate_path = Regex::new(r"\bcrate((?:::\w+)+)").unwrap();
    let super_path = Regex::new(r"\b((?:super::)+)(\w+(?:::\w+)*)").unwrap();
    let crate_group = Regex::new(r"(?s)use\s+crate::\{(.*?)\};").unwrap();
    let tests = Regex::new(r"(?s)#\[cfg\(test\)\]\s*mod tests\s*\{.*").unwrap();
    let mut g = BTreeMap::new();
    for (m, f) in &mods {
        let text = std::fs::read_to_string(f).unwrap();
        let text = tests.replace(&text, "");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let is_dir = f.ends_with("mod.rs") || f.ends_with("lib.rs") || f.ends_with("main.rs");
        // The module `super` names from this file.
        let here: ModPath = if is_dir {
            m.clone()
        } else {
            m[..m.len().saturating_sub(1)].to_vec()
        };
        let mut refs: Vec<ModPath> = Vec::new();
        for c in crate_path.captures_iter(&code) {
            refs.push(c[1].split("::").skip(1).map(str::to_string).collect());
        }
        for c in super_path.captures_iter(&code) {
            let ups = c[1].matches("super::").count();
            let mut base = here.clone();
            base.truncate(base.len().saturating_sub(ups - 1));
            base.extend(c[2].split("::").map(str::to_string));
            refs.push(base);
        }
        for c in crate_group.captures_iter(&code) {
            for part in c[1].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push(vec![name]);
                }
            }
        }
        let mut deps = BTreeSet::new();
        for r in refs {
            let target = (1..=r.len())
                .rev()
                .map(|k| r[..k].to_vec())
                .find(|p| mods.contains_key(p));
            if let Some(t) = target {
                let ancestor = m.len() >= t.len() && m[..t.len()] == t[..];
                if !ancestor {
                    deps.insert(t);
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// A cycle through `start`, if any: the path back to it.
fn cycle_through(
    g: &BTreeMap<ModPath, BTreeSet<ModPath>>,
    start: &ModPath,
) -> Option<Vec<ModPath>> {
    let mut stack = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in g.get(&node).into_iter().flatten() {
            if next == start {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

fn check(krate: &str) {
    let g = graph(krate);
    assert!(!g.is_empty(), "{krate}: no modules found");
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_through(&g, m))
        .map(|c| {
            c.iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "{krate}: modules that import themselves back:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn schemas_modules_form_no_cycle() {
    check("schemas");
}

#[test]
fn collector_modules_form_no_cycle() {
    check("collector");
}

#[test]
fn aggregator_modules_form_no_cycle() {
    check("aggregator");
}

#[test]
fn cli_modules_form_no_cycle() {
    check("cli");
}

#[test]
fn benches_and_dashboards_modules_form_no_cycle() {
    check("benches");
    check("dashboards");
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let m = |s: &str| vec![s.to_string()];
    let mut g = BTreeMap::new();
    g.insert(m("a"), BTreeSet::from([m("b")]));
    g.insert(m("b"), BTreeSet::from([m("c")]));
    g.insert(m("c"), BTreeSet::from([m("a")]));
    g.insert(m("d"), BTreeSet::from([m("a")]));
    assert_eq!(cycle_through(&g, &m("a")).unwrap().len(), 4);
    assert!(cycle_through(&g, &m("d")).is_none());
}
