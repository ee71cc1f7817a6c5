//! The import graph of `src/`: which top-level module uses which (`crate::<module>` anywhere in
//! its files, comments aside). Every arrow points down the layers — edges (HTTP, job handlers,
//! worker, CLI, wiring) → use cases (sync lifecycle, admin, ingest, pipeline, scheduler) → `db` →
//! pure rules and infrastructure → `domain` — and no two modules use each other, directly or
//! through others.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The layer of each top-level module; a module may use modules of its own layer or below.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("matching", 1),
    ("mapping", 1),
    ("config", 1),
    ("crypto", 1),
    ("n8n", 1),
    ("jwt", 1),
    ("telemetry", 1),
    ("db", 2),
    ("sync", 3),
    ("admin", 3),
    ("ingest", 3),
    ("pipeline", 3),
    ("scheduler", 3),
    ("http", 4),
    ("tasks", 4),
    ("worker", 4),
    ("cli", 4),
    ("app", 5),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::a`, and the `a` of `crate::{a, b::c}`, in source with its comments removed.
fn used_modules(source: &str, known: &BTreeSet<&str>) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split on commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            let mut names = Vec::new();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.push(&group[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            names
        } else {
            vec![rest]
        };
        for name in names {
            let name: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if known.contains(name.as_str()) {
                used.insert(name);
            }
        }
    }
    used
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        assert!(
            known.contains(top.as_str()),
            "src/{top} has no layer: add it to LAYERS"
        );
        let mut used = used_modules(&std::fs::read_to_string(&file).unwrap(), &known);
        used.remove(&top);
        graph.entry(top).or_default().extend(used);
    }
    graph
}

#[test]
fn every_import_points_down_and_no_module_cycle() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let graph = graph();
    assert!(
        graph["app"].contains("http") && graph["http"].contains("db"),
        "{graph:?}"
    );
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| layer[t.as_str()] > layer[from.as_str()])
                .map(move |t| format!("{from} → {t}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports pointing up the layers: {upward:?}"
    );

    // A cycle would show as a module reaching itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(next) = stack.pop() {
            assert!(next != start, "{start} reaches itself through {seen:?}");
            if seen.insert(next.clone()) {
                stack.extend(graph.get(next).into_iter().flatten());
            }
        }
    }
}
