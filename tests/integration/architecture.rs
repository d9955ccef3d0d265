//! The crate reads one way: each module imports only the layers above it (the data every
//! stage hands on, then the shared layers, then the stages in pipeline order), and no
//! source file grows past what one reader holds in mind.

use crate::support::repo;
use std::path::{Path, PathBuf};

/// Layers in order; a module may use its own layer's base modules and anything earlier.
/// Rank 0: data every stage hands on; 1: shared layers (know no stage); 2: the mapping
/// file; then the stages.
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("device", 0),
    ("dtype", 0),
    ("input", 0),
    ("spec", 0),
    ("progress", 0),
    ("output", 0),
    ("rules", 0),
    ("format", 1),
    ("libtorch", 1),
    // The mapping file: the contract between `map` and `apply`, read and written as JSON.
    ("mapping", 2),
    ("read", 3),
    ("normalize", 4),
    ("trace", 5),
    ("score", 6),
    ("assign", 7),
    ("mapper", 8),
    ("pipeline", 9),
    ("report", 10),
    ("apply", 11),
    ("verify", 12),
    ("export", 12),
    ("diff", 13),
];

/// Longest source file, in lines (unit-test files aside).
const MAX_LINES: usize = 1000;

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, r)| r)
}

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

/// Every library source file with its top-level module (`src/mapper/side.rs` → `mapper`).
fn library_files() -> Vec<(String, PathBuf)> {
    let src = repo().join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            (!matches!(top.as_str(), "cli" | "main" | "lib")).then_some((top, p))
        })
        .collect()
}

#[test]
fn every_module_has_a_layer_and_imports_only_earlier_ones() {
    let mut wrong = vec![];
    for (module, path) in library_files() {
        let own = rank(&module).unwrap_or_else(|| {
            panic!(
                "{}: module '{module}' has no layer in LAYERS",
                path.display()
            )
        });
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let Some(dep_rank) = rank(&dep) else { continue };
                // Base data modules may use each other; shared layers only the base; a
                // stage only what comes before it.
                let allowed = dep == module || dep_rank < own || (own == 0 && dep_rank == 0);
                if !allowed {
                    wrong.push(format!("{}:{}: {module} uses {dep}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the pipeline:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_a_reader_holds() {
    let long: Vec<String> = library_files()
        .into_iter()
        .map(|(_, p)| p)
        .chain({
            let mut cli = vec![];
            rust_files(&repo().join("src/cli"), &mut cli);
            cli
        })
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "tests.rs" && !name.ends_with("_tests.rs")
        })
        .filter_map(|p| {
            let n = std::fs::read_to_string(&p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}
