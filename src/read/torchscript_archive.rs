//! A bounds check of a TorchScript archive, run before libtorch sees it.
//!
//! libtorch's loader (`torch::jit::load`) is not built for hostile input: it parses the
//! archive's Python source (`code/**.py`) with a recursive-descent parser and compiles the
//! resulting trees recursively, and unpickles `data.pkl` / `constants.pkl` into values that
//! are destroyed recursively, so a deeply nested expression or list overflows the stack and
//! kills the process (`torch.jit.load` itself segfaults on them). [`check`] reads the
//! archive with weightmap's own readers first and refuses, naming the file and the entry:
//!
//! - zip entries that lie outside the file, too many entries, or entries larger than the
//!   limits below;
//! - pickles (`*.pkl`) that the bounded pickle machine ([`crate::format::pickle`])
//!   refuses (lengths past the end of the data, oversized stacks and memos), or whose
//!   containers nest deeper than [`MAX_PICKLE_NESTING`];
//! - source files whose brackets nest deeper than [`MAX_CODE_BRACKETS`] (CPython's own
//!   tokenizer limit), whose blocks are indented more than [`MAX_CODE_INDENTS`] levels
//!   (CPython's limit) or whose expressions chain more than [`MAX_CODE_CHAIN`] operators,
//!   attribute accesses or calls (each a level of the tree libtorch compiles recursively).
//!
//! The limits are far above what `torch.jit.save` writes for real models, whose generated
//! code nests a few levels and whose pickles nest as deep as the module tree.
//!
//! The debug files (`*.debug_pkl`, the source ranges of the code, often most of the archive)
//! are not checked: libtorch is asked not to load them (`load_debug_files = false`), so they
//! never reach it.

use crate::error::{Error, Result};
use crate::format::pickle;
use crate::format::torch_zip::{self, FileKey};
use std::path::Path;
use std::sync::Mutex;

const FORMAT: &str = "TorchScript archive";

/// Most zip entries accepted (a tensor is one entry; 2M covers the largest models).
pub const MAX_ENTRIES: usize = 1 << 21;
/// Largest pickle entry read (`data.pkl`, `constants.pkl`).
pub const MAX_PICKLE_BYTES: u64 = torch_zip::MAX_DATA_PKL_BYTES;
/// Largest source entry (`code/**.py`) read.
pub const MAX_CODE_BYTES: u64 = 64 << 20;
/// Deepest container nesting accepted in a pickle. Python's pickler stops at its
/// recursion limit (1000) long before this.
pub const MAX_PICKLE_NESTING: usize = 1000;
/// Deepest bracket nesting accepted in source code (CPython's tokenizer: `MAXLEVEL`).
pub const MAX_CODE_BRACKETS: usize = 200;
/// Most indentation levels accepted in source code (CPython's tokenizer: `MAXINDENT`).
pub const MAX_CODE_INDENTS: usize = 100;
/// Longest chain of operators, attribute accesses and calls in one expression, counted
/// over the enclosing brackets (each makes one more level of the expression tree).
pub const MAX_CODE_CHAIN: usize = 1000;

/// Checks the TorchScript archive at `path` against the limits of this module; an error
/// names the file and the entry at fault.
///
/// An archive that passed is remembered (by path, inode, size and times) for the rest
/// of the process: reading a target and then loading it for its order checks it once.
pub fn check(path: &Path) -> Result<()> {
    if passed(path)?.0 {
        return Ok(());
    }
    scan(path, |_, _| None::<()>).map(drop)
}

/// The archives that passed [`check`] in this process.
static PASSED: Mutex<Vec<FileKey>> = Mutex::new(Vec::new());

/// Whether the archive at `path`, as it is now, passed the check in this process; and its
/// key.
fn passed(path: &Path) -> Result<(bool, FileKey)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let key = FileKey::new(path, &meta);
    Ok((PASSED.lock().is_ok_and(|p| p.contains(&key)), key))
}

/// Checks the archive as [`check`] does, and hands each pickle and source entry that passed
/// to `visit` (its entry name and bytes), so that a reader of those entries inflates each
/// once: `visit`'s answers come back in entry order.
pub(crate) fn scan<T: Send>(
    path: &Path,
    visit: impl Fn(&str, &[u8]) -> Option<T> + Sync,
) -> Result<Vec<T>> {
    let key = passed(path)?.1;
    let corrupt = |m: String| Error::corrupt(path, FORMAT, m);
    let (zip, layout) = torch_zip::open_layout(path)?;
    if layout.entries.len() > MAX_ENTRIES {
        return Err(corrupt(format!(
            "{} zip entries, more than the {MAX_ENTRIES} accepted",
            layout.entries.len()
        )));
    }
    // Entries are independent: checked side by side, each worker with its own reader of
    // the one open zip; the first refusal in entry order is reported.
    use rayon::prelude::*;
    let checked: Vec<(usize, std::result::Result<Option<T>, String>)> = layout
        .entries
        .par_iter()
        .enumerate()
        .map_init(
            || zip.clone(),
            |zip, (i, entry)| {
                let visited = check_entry(zip, i, entry)
                    .map(|bytes| bytes.and_then(|b| visit(&entry.name, &b)));
                (i, visited)
            },
        )
        .filter(|(_, v)| !matches!(v, Ok(None)))
        .collect();
    let mut visited = Vec::new();
    for (_, v) in checked {
        match v {
            Ok(Some(t)) => visited.push(t),
            Ok(None) => {}
            Err(m) => return Err(corrupt(m)),
        }
    }
    if let Ok(mut p) = PASSED.lock() {
        p.push(key);
    }
    Ok(visited)
}

/// Checks one entry of the archive if it is a pickle or source code, and gives its bytes;
/// the message names the entry.
fn check_entry(
    zip: &mut torch_zip::Zip,
    i: usize,
    entry: &torch_zip::ArchiveEntry,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let name = entry.name.as_str();
    // `*.debug_pkl` (source ranges, most of a large archive's code) are not read: the shim
    // loads archives without their debug files.
    let is_pickle = name.ends_with(".pkl");
    let is_code = name.ends_with(".py") && name.contains("code/");
    if !is_pickle && !is_code {
        return Ok(None);
    }
    let limit = if is_pickle {
        MAX_PICKLE_BYTES
    } else {
        MAX_CODE_BYTES
    };
    if entry.size > limit {
        return Err(format!(
            "{name} declares {} bytes, more than the {limit}-byte limit",
            entry.size
        ));
    }
    let bytes = torch_zip::read_entry(zip, i, limit).map_err(|m| format!("{name}: {m}"))?;
    let problem = if is_pickle {
        check_pickle(&bytes)
    } else {
        check_code(&bytes)
    };
    problem.map_err(|m| format!("{name}: {m}; refused before libtorch loads it"))?;
    Ok(Some(bytes))
}

/// Parses a pickle with the bounded machine and measures its container nesting.
pub fn check_pickle(bytes: &[u8]) -> std::result::Result<(), String> {
    let p = pickle::parse(bytes).map_err(|e| e.to_string())?;
    let depth = pickle_nesting(&p);
    if depth > MAX_PICKLE_NESTING {
        return Err(format!(
            "containers nest {depth} deep, more than the {MAX_PICKLE_NESTING} accepted"
        ));
    }
    Ok(())
}

/// The children of a node, for the nesting measure.
fn children(node: &pickle::Node) -> Vec<pickle::Value> {
    use pickle::Node;
    match node {
        Node::Tuple(v) | Node::List(v) | Node::Set(v) => v.clone(),
        Node::Dict(d) => d.entries().iter().flat_map(|(k, v)| [*k, *v]).collect(),
        Node::Object(o) => {
            let mut v = vec![o.class, o.args];
            v.extend(o.state);
            v.extend(o.dict.entries().iter().flat_map(|(k, v)| [*k, *v]));
            v.extend(o.list.iter().copied());
            v
        }
        Node::PersistentId(v) => vec![*v],
        Node::Global { .. } | Node::Storage(_) | Node::Tensor(_) => vec![],
    }
}

/// The deepest container nesting of any value the pickle built, reachable from the root
/// or not (libtorch builds and destroys them all). Iterative, memoized over shared nodes;
/// a cycle counts once.
fn pickle_nesting(p: &pickle::Pickle) -> usize {
    // Indexed by node id (the arena's order): 0 while unmeasured.
    let mut depth: Vec<usize> = Vec::new();
    let mut on_path: Vec<bool> = Vec::new();
    let known = |depth: &[usize], id: u32| depth.get(id as usize).copied().unwrap_or(0);
    let mut deepest = 0;
    let mut id = 0u32;
    while let Some(node) = p.node(pickle::Value::Node(id)) {
        if depth.len() <= id as usize {
            depth.resize(id as usize + 1, 0);
            on_path.resize(id as usize + 1, false);
        }
        if depth[id as usize] == 0 {
            // Explicit stack of (node, its children, next child index).
            let mut stack = vec![(id, children(node), 0usize)];
            on_path[id as usize] = true;
            while let Some((n, kids, next)) = stack.last_mut() {
                let n = *n;
                if let Some(&child) = kids.get(*next) {
                    *next += 1;
                    if let pickle::Value::Node(c) = child {
                        let fresh = known(&depth, c) == 0
                            && !on_path.get(c as usize).copied().unwrap_or(false);
                        if let (true, Some(cn)) = (fresh, p.node(child)) {
                            if depth.len() <= c as usize {
                                depth.resize(c as usize + 1, 0);
                                on_path.resize(c as usize + 1, false);
                            }
                            on_path[c as usize] = true;
                            stack.push((c, children(cn), 0));
                        }
                    }
                    continue;
                }
                let d = 1 + kids
                    .iter()
                    .map(|k| match k {
                        pickle::Value::Node(c) => known(&depth, *c),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                depth[n as usize] = d;
                on_path[n as usize] = false;
                deepest = deepest.max(d);
                stack.pop();
            }
        }
        id += 1;
    }
    deepest
}

/// Scans source code for nesting that libtorch's parser and compiler would follow
/// recursively: brackets, indentation and chained expressions (see the module docs).
/// String literals and comments are skipped.
pub fn check_code(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut line = 1usize;
    // One counter of chained operations per open bracket, plus the statement's own.
    let mut chain: Vec<usize> = vec![0];
    let mut indents: Vec<usize> = vec![0];
    let mut at_line_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if at_line_start {
            let width = bytes[i..]
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
            let next = bytes.get(i + width).copied();
            // Blank and comment-only lines do not open or close blocks.
            if chain.len() == 1 && !matches!(next, None | Some(b'\n' | b'\r' | b'#')) {
                while indents.last().is_some_and(|&w| w > width) {
                    indents.pop();
                }
                if indents.last().is_some_and(|&w| w < width) {
                    indents.push(width);
                }
                if indents.len() - 1 > MAX_CODE_INDENTS {
                    return Err(format!(
                        "line {line}: blocks nest more than {MAX_CODE_INDENTS} levels deep"
                    ));
                }
            }
            at_line_start = false;
            i += width;
            continue;
        }
        match b {
            b'\n' => {
                line += 1;
                if chain.len() == 1 {
                    chain[0] = 0;
                    at_line_start = true;
                }
            }
            b'#' => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'\'' | b'"' => {
                i = skip_string(bytes, i, &mut line);
                continue;
            }
            b'(' | b'[' | b'{' => {
                chain.push(0);
                if chain.len() - 1 > MAX_CODE_BRACKETS {
                    return Err(format!(
                        "line {line}: brackets nest more than {MAX_CODE_BRACKETS} deep"
                    ));
                }
            }
            b')' | b']' | b'}' => {
                if chain.len() > 1 {
                    chain.pop();
                }
                // A call, subscript or group is one more link of the enclosing chain.
                *chain.last_mut().expect("the statement's counter stays") += 1;
            }
            b',' | b';' => *chain.last_mut().expect("the statement's counter stays") = 0,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'@' | b'&' | b'|' | b'^' | b'~' | b'<' | b'>'
            | b'!' | b'.' => {
                *chain.last_mut().expect("the statement's counter stays") += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = i + bytes[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                if matches!(
                    &bytes[i..end],
                    b"not" | b"and" | b"or" | b"is" | b"in" | b"if" | b"else" | b"lambda"
                ) {
                    *chain.last_mut().expect("the statement's counter stays") += 1;
                }
                i = end;
                continue;
            }
            _ => {}
        }
        let total: usize = chain.iter().sum::<usize>() + chain.len();
        if total > MAX_CODE_CHAIN {
            return Err(format!(
                "line {line}: an expression chains more than {MAX_CODE_CHAIN} operations"
            ));
        }
        i += 1;
    }
    Ok(())
}

/// The index just past the string literal starting at `start` (a quote), counting lines.
fn skip_string(bytes: &[u8], start: usize, line: &mut usize) -> usize {
    let q = bytes[start];
    let triple = bytes.get(start..start + 3) == Some(&[q, q, q][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'\n' => {
                *line += 1;
                if !triple {
                    return i; // An unterminated string: the parser will say so.
                }
            }
            c if c == q => {
                if !triple {
                    return i + 1;
                }
                if bytes.get(i..i + 3) == Some(&[q, q, q][..]) {
                    return i + 3;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_code_passes() {
        let code = b"class M(Module):\n  __parameters__ = [\"w\", ]\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n    _0 = torch.add(torch.mul(x, 2), 1, alpha=1)\n    if bool(torch.gt(x, 0)):\n      y = \"((((\" # (((\n    else:\n      y = [-1, -2, -3]\n    return _0\n";
        check_code(code).unwrap();
    }

    #[test]
    fn deep_brackets_chains_and_blocks_are_refused() {
        let deep = format!("x = {}1{}\n", "(".repeat(300), ")".repeat(300));
        assert!(check_code(deep.as_bytes())
            .unwrap_err()
            .contains("brackets nest"));
        let chain = format!("x = {}\n", vec!["a"; 2000].join(" + "));
        assert!(check_code(chain.as_bytes())
            .unwrap_err()
            .contains("chains more than"));
        let unary = format!("x = {}a\n", "-".repeat(2000));
        assert!(check_code(unary.as_bytes()).is_err());
        let calls = format!("x = f{}\n", "()".repeat(2000));
        assert!(check_code(calls.as_bytes()).is_err());
        let mut blocks = String::new();
        for d in 0..150 {
            blocks += &format!("{}if x:\n", " ".repeat(d));
        }
        blocks += &format!("{}pass\n", " ".repeat(150));
        assert!(check_code(blocks.as_bytes())
            .unwrap_err()
            .contains("blocks nest"));
    }

    #[test]
    fn deep_pickle_is_measured() {
        // PROTO 2, 2000 x EMPTY_LIST, 1999 x APPEND, STOP.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 2000));
        p.extend(std::iter::repeat_n(b'a', 1999));
        p.push(b'.');
        assert!(check_pickle(&p).unwrap_err().contains("nest 2000 deep"));
    }
}
