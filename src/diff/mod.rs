//! The diff stage: what was renamed, changed, converted, added or removed between two
//! models, by name, structure and content.
//!
//! Both models are read as usual (headers only), then every tensor's bytes are streamed
//! once, in parallel and in bounded chunks: tensors of the same name, dtype and shape are
//! compared byte for byte, every other tensor is hashed (xxh3; a same-name pair that
//! differs is read again to hash it). The pairs are then
//! found in order of the strength of their evidence:
//! 1. **identical**: same name, dtype, shape and bytes;
//! 2. **renamed by content**: among the rest, a content (dtype, shape, hash) found exactly
//!    once on each side pairs its two tensors whatever their names, confirmed byte for byte;
//!    content found more than once (zeros, ones, tied copies) proves nothing and is left
//!    to the next steps, which [`DiffResult::notes`] says;
//! 3. **same name**, values or dtype or layout different: changed or converted;
//! 4. **the mapping engine** ([`crate::mapper::Mapper`], run on the whole models so that
//!    structure helps) pairs what is left; a pair it finds is renamed (bytes equal),
//!    changed or converted;
//! 5. what has no counterpart is removed (only in A) or added (only in B).
//!
//! For two TorchScript models, [`graph`] compares the forward graphs too.

mod by_content;
mod content;
pub mod graph;
mod html;

pub use by_content::{suggest_by_content, ContentMapping};
pub use content::Stats;

use crate::apply::data::TensorData;
use crate::error::Result;
use crate::mapper::{Mapper, MapperOptions, SuggestOptions, Transform};
use crate::read::ReadOptions;
use crate::read_model;
use crate::spec::{Format, ModelSpec, TensorInfo};
use content::Layout;
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// Version of the JSON written by [`DiffResult::to_json`]: the one shared by every `--json`.
pub use crate::format::json::SCHEMA_VERSION;

/// Options of [`diff`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// How both files are read (state dict key, prefixes).
    pub read: ReadOptions,
    /// A changed or converted pair whose largest absolute difference is at most this
    /// counts as close (the same weights for the exit status).
    pub tolerance: f64,
    /// Compare the forward graphs of two TorchScript models (loads them through libtorch).
    pub graphs: bool,
}

/// What paired two tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairedBy {
    /// The same name.
    Name,
    /// Equal content found once on each side.
    Content,
    /// The mapping engine (names, shapes, structure).
    Engine,
}

impl PairedBy {
    fn name(self) -> &'static str {
        match self {
            PairedBy::Name => "name",
            PairedBy::Content => "content",
            PairedBy::Engine => "engine",
        }
    }
}

/// One tensor of A and/or B and what the diff found about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The tensor in A (its name as written in the file), if any.
    pub a: Option<TensorInfo>,
    /// The tensor in B, if any.
    pub b: Option<TensorInfo>,
    /// What paired them (pairs only).
    pub paired_by: Option<PairedBy>,
    /// The numeric differences (changed and converted pairs whose dtypes have values).
    pub stats: Option<Stats>,
    /// Whether the difference is within the tolerance.
    pub close: bool,
    /// What changed in a converted pair (`float32 -> float16`, `transpose`).
    pub conversion: Option<String>,
}

/// The result of [`diff`].
#[derive(Debug, Clone)]
pub struct DiffResult {
    /// File A.
    pub a: String,
    /// File B.
    pub b: String,
    /// The tolerance used.
    pub tolerance: f64,
    /// Same name, dtype, shape and bytes.
    pub identical: Vec<Entry>,
    /// Different names, same dtype, shape and bytes.
    pub renamed: Vec<Entry>,
    /// Paired, same dtype and shape, different values.
    pub changed: Vec<Entry>,
    /// Paired, dtype or layout changed.
    pub converted: Vec<Entry>,
    /// Only in B.
    pub added: Vec<Entry>,
    /// Only in A.
    pub removed: Vec<Entry>,
    /// What the reader should know about how pairs were found (content that is not
    /// unique, left to the engine).
    pub notes: Vec<String>,
    /// The forward graphs compared, for two TorchScript models with [`DiffOptions::graphs`].
    pub graph: Option<graph::GraphDiff>,
}

/// Compares the models in files `a` and `b` (any format with tensor data).
///
/// Errors: a file cannot be read, or has no tensor data (a model spec JSON).
pub fn diff(a: &Path, b: &Path, options: &DiffOptions) -> Result<DiffResult> {
    if !(options.tolerance >= 0.0 && options.tolerance.is_finite()) {
        return Err(crate::Error::invalid(
            "--tolerance",
            format!("{}: give a non-negative number", options.tolerance),
        ));
    }
    let mut sa = read_model(a, &options.read)?;
    let mut sb = read_model(b, &options.read)?;
    locate_values(&mut sa)?;
    locate_values(&mut sb)?;
    let both_scripts = sa.format == Format::TorchScript && sb.format == Format::TorchScript;
    // The graphs are read by libtorch: asked for without it, say so before the work.
    #[cfg(not(feature = "libtorch"))]
    if options.graphs && both_scripts {
        return Err(crate::Error::NeedsLibtorch {
            what: format!(
                "comparing the forward graphs of {} and {} (`--no-graph` compares the weights alone)",
                a.display(),
                b.display()
            ),
            order_needed: None,
        });
    }
    // The engine puts back a prefix stripped on one side that the other uses: both sides
    // then name things alike, so its specs are the ones compared.
    let mapper = Mapper::new(sa, sb, MapperOptions::default())?;
    let mut result = Diff::new(mapper.source(), mapper.target())?.run(&mapper)?;
    result.tolerance = options.tolerance;
    for e in result.changed.iter_mut().chain(&mut result.converted) {
        e.close = e.stats.is_some_and(|s| s.max_abs_diff <= options.tolerance);
    }
    result.a = a.display().to_string();
    result.b = b.display().to_string();
    #[cfg(feature = "libtorch")]
    if options.graphs && both_scripts {
        let pairs: Vec<(String, String)> = result
            .paired()
            .map(|(x, y)| (x.original_name.clone(), y.original_name.clone()))
            .collect();
        result.graph = Some(graph::compare(a, b, &pairs)?);
    }
    Ok(result)
}

/// Gives every tensor of `spec` the location of its values (TorchScript archives: from
/// their pickle, when read through libtorch; checkpoints already have them).
///
/// Errors: a model spec JSON, which has no values.
pub(crate) fn locate_values(spec: &mut ModelSpec) -> Result<()> {
    match spec.format {
        // The header reader gives locations; a module loaded through libtorch has none.
        Format::TorchScript if spec.tensors.iter().any(|t| t.location.is_none()) => {
            crate::read::torchscript::locate_tensors(spec)
        }
        Format::SpecJson => Err(crate::Error::Unsupported {
            path: spec.path.clone().into(),
            message: "a model spec has names and shapes but no values to compare; give a checkpoint, safetensors file or TorchScript model".into(),
        }),
        _ => Ok(()),
    }
}

/// Content key: dtype, shape, hash.
type ContentKey<'s> = (&'s str, &'s [i64], u64);

/// The working state of one diff.
struct Diff<'s> {
    a: &'s ModelSpec,
    b: &'s ModelSpec,
    da: TensorData,
    db: TensorData,
    /// Tensors of A still without a category (persistent ones only).
    free_a: Vec<bool>,
    free_b: Vec<bool>,
    hash_a: Vec<u64>,
    hash_b: Vec<u64>,
    result: DiffResult,
}

/// One unit of the parallel read.
enum Task {
    /// A tensor of A and one of B with the same name, dtype and shape.
    Pair(usize, usize),
    /// A tensor of A alone.
    A(usize),
    /// A tensor of B alone.
    B(usize),
}

impl<'s> Diff<'s> {
    fn new(a: &'s ModelSpec, b: &'s ModelSpec) -> Result<Self> {
        // Non-persistent tensors (TorchScript attributes outside the state dict) are not
        // weights of the model.
        let free = |s: &ModelSpec| s.tensors.iter().map(|t| t.persistent).collect::<Vec<_>>();
        Ok(Diff {
            a,
            b,
            da: TensorData::open(a)?,
            db: TensorData::open(b)?,
            free_a: free(a),
            free_b: free(b),
            hash_a: vec![0; a.tensors.len()],
            hash_b: vec![0; b.tensors.len()],
            result: DiffResult {
                a: String::new(),
                b: String::new(),
                tolerance: 0.0,
                identical: vec![],
                renamed: vec![],
                changed: vec![],
                converted: vec![],
                added: vec![],
                removed: vec![],
                notes: vec![],
                graph: None,
            },
        })
    }

    fn run(mut self, mapper: &Mapper) -> Result<DiffResult> {
        let by_name_b: HashMap<&str, usize> = self
            .b
            .tensors
            .iter()
            .enumerate()
            .filter(|&(j, _)| self.free_b[j])
            .map(|(j, t)| (t.name.as_str(), j))
            .collect();
        let name_pairs: Vec<(usize, usize)> = (0..self.a.tensors.len())
            .filter(|&i| self.free_a[i])
            .filter_map(|i| Some((i, *by_name_b.get(self.a.tensors[i].name.as_str())?)))
            .collect();

        self.read_all(&name_pairs)?;
        self.pair_by_content()?;
        for &(i, j) in &name_pairs {
            if self.free_a[i] && self.free_b[j] {
                self.classify(i, j, PairedBy::Name, None)?;
            }
        }
        if self.free_a.contains(&true) && self.free_b.contains(&true) {
            let mapping = mapper.suggest_mapping(&SuggestOptions::default())?;
            let index = |s: &ModelSpec| -> HashMap<String, usize> {
                s.tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect()
            };
            let (ia, ib) = (index(self.a), index(self.b));
            for m in &mapping.mappings {
                let (Some(&i), Some(&j)) = (ia.get(&m.source), ib.get(&m.target)) else {
                    continue;
                };
                if self.free_a[i] && self.free_b[j] {
                    self.classify(i, j, PairedBy::Engine, m.transform.clone())?;
                }
            }
        }
        for (i, t) in self.a.tensors.iter().enumerate() {
            if self.free_a[i] {
                self.result.removed.push(single(Some(t), None));
            }
        }
        for (j, t) in self.b.tensors.iter().enumerate() {
            if self.free_b[j] {
                self.result.added.push(single(None, Some(t)));
            }
        }
        Ok(self.result)
    }

    /// Streams every tensor once, in parallel: compares same-name pairs of equal dtype and
    /// shape, files the equal ones as identical, and hashes all the others.
    fn read_all(&mut self, name_pairs: &[(usize, usize)]) -> Result<()> {
        let (a, b) = (self.a, self.b);
        let mut in_pair_a = vec![false; a.tensors.len()];
        let mut in_pair_b = vec![false; b.tensors.len()];
        let mut tasks = Vec::new();
        for &(i, j) in name_pairs {
            let (ta, tb) = (&a.tensors[i], &b.tensors[j]);
            if ta.dtype == tb.dtype && ta.shape == tb.shape {
                tasks.push(Task::Pair(i, j));
                in_pair_a[i] = true;
                in_pair_b[j] = true;
            }
        }
        tasks.extend(
            (0..a.tensors.len())
                .filter(|&i| self.free_a[i] && !in_pair_a[i])
                .map(Task::A),
        );
        tasks.extend(
            (0..b.tensors.len())
                .filter(|&j| self.free_b[j] && !in_pair_b[j])
                .map(Task::B),
        );
        // Largest first, so that one big tensor does not finish last on its own.
        let size = |t: &Task| match *t {
            Task::Pair(i, _) | Task::A(i) => a.tensors[i].nbytes(),
            Task::B(j) => b.tensors[j].nbytes(),
        };
        tasks.sort_by_key(|t| std::cmp::Reverse(size(t)));
        let total: u64 = tasks.iter().map(size).sum();
        let progress = crate::progress::Progress::bytes(total, "reading tensors");
        let (da, db) = (&self.da, &self.db);
        let outcomes: Vec<(bool, u64, u64)> = tasks
            .par_iter()
            .map(|task| {
                let out = match *task {
                    // Equal pairs need no hash (they are paired); the rare pair that
                    // differs is read again to hash both, for pairing by content.
                    Task::Pair(i, j) => {
                        let (ta, tb) = (&a.tensors[i], &b.tensors[j]);
                        if content::equal(da, ta, db, tb)? {
                            Ok((true, 0, 0))
                        } else {
                            Ok((false, content::hash(da, ta)?, content::hash(db, tb)?))
                        }
                    }
                    Task::A(i) => content::hash(da, &a.tensors[i]).map(|h| (false, h, 0)),
                    Task::B(j) => content::hash(db, &b.tensors[j]).map(|h| (false, 0, h)),
                };
                progress.inc(size(task));
                out
            })
            .collect::<Result<_>>()?;
        progress.finish();
        for (task, (equal, ha, hb)) in tasks.iter().zip(outcomes) {
            match *task {
                Task::Pair(i, j) => {
                    self.hash_a[i] = ha;
                    self.hash_b[j] = hb;
                    if equal {
                        self.free_a[i] = false;
                        self.free_b[j] = false;
                        let mut e = single(Some(&a.tensors[i]), Some(&b.tensors[j]));
                        e.paired_by = Some(PairedBy::Name);
                        self.result.identical.push(e);
                    }
                }
                Task::A(i) => self.hash_a[i] = ha,
                Task::B(j) => self.hash_b[j] = hb,
            }
        }
        // File order, not size order.
        self.result
            .identical
            .sort_by_key(|e| e.a.as_ref().map(|t| t.position));
        Ok(())
    }

    /// Pairs the free tensors whose content occurs exactly once on each side.
    fn pair_by_content(&mut self) -> Result<()> {
        let sides = [
            Side::new(self.a, &self.da, &self.hash_a, &self.free_a),
            Side::new(self.b, &self.db, &self.hash_b, &self.free_b),
        ];
        let (pairs, notes) = unique_content_pairs(&sides[0], &sides[1])?;
        for (i, j) in pairs {
            self.take(i, j);
            let mut e = single(Some(&self.a.tensors[i]), Some(&self.b.tensors[j]));
            e.paired_by = Some(PairedBy::Content);
            self.result.renamed.push(e);
        }
        self.result.notes.extend(notes);
        Ok(())
    }

    fn take(&mut self, i: usize, j: usize) {
        self.free_a[i] = false;
        self.free_b[j] = false;
    }

    /// Files the pair (i, j) as renamed, changed or converted.
    fn classify(
        &mut self,
        i: usize,
        j: usize,
        by: PairedBy,
        transform: Option<Transform>,
    ) -> Result<()> {
        let (ta, tb) = (&self.a.tensors[i], &self.b.tensors[j]);
        let layout = match (&transform, ta.shape == tb.shape) {
            (None, true) => Layout::Same,
            (Some(Transform::Transpose), _) => Layout::Transposed,
            (Some(Transform::Reshape(_)), _) | (None, false) if ta.numel == tb.numel => {
                Layout::Same
            }
            // Same name, shapes that no layout change explains: two different tensors.
            _ => return Ok(()),
        };
        self.take(i, j);
        let mut e = single(Some(ta), Some(tb));
        e.paired_by = Some(by);
        let same_layout = layout == Layout::Same && ta.shape == tb.shape;
        if ta.dtype == tb.dtype && same_layout {
            if content::equal(&self.da, ta, &self.db, tb)? {
                // Equal content that was not unique, paired by the engine: a rename.
                self.result.renamed.push(e);
                return Ok(());
            }
            e.stats = content::measure(&self.da, ta, &self.db, tb, layout)?;
            self.result.changed.push(e);
            return Ok(());
        }
        let mut what = vec![];
        if ta.dtype != tb.dtype {
            what.push(format!("{} -> {}", ta.dtype, tb.dtype));
        }
        match layout {
            Layout::Transposed => what.push("transpose".into()),
            Layout::Same if ta.shape != tb.shape => {
                what.push(format!("reshape {:?} -> {:?}", ta.shape, tb.shape))
            }
            Layout::Same => {}
        }
        e.conversion = Some(what.join(", "));
        e.stats = content::measure(&self.da, ta, &self.db, tb, layout)?;
        self.result.converted.push(e);
        Ok(())
    }
}

/// One model as content pairing sees it: its tensors, their data, their hashes, and
/// which of them are still to be paired.
pub(crate) struct Side<'s> {
    spec: &'s ModelSpec,
    data: &'s TensorData,
    hash: &'s [u64],
    free: &'s [bool],
}

impl<'s> Side<'s> {
    fn new(spec: &'s ModelSpec, data: &'s TensorData, hash: &'s [u64], free: &'s [bool]) -> Self {
        Side {
            spec,
            data,
            hash,
            free,
        }
    }
}

/// The hashes of every tensor of `spec` (0 for those not `wanted`), read in parallel.
pub(crate) fn hash_all(spec: &ModelSpec, data: &TensorData, wanted: &[bool]) -> Result<Vec<u64>> {
    let todo: Vec<usize> = (0..spec.tensors.len()).filter(|&i| wanted[i]).collect();
    let hashes: Vec<u64> = todo
        .par_iter()
        .map(|&i| content::hash(data, &spec.tensors[i]))
        .collect::<Result<_>>()?;
    let mut out = vec![0; spec.tensors.len()];
    for (i, h) in todo.into_iter().zip(hashes) {
        out[i] = h;
    }
    Ok(out)
}

/// Pairs of (A index, B index) found by content, and notes on content that is not unique.
pub(crate) type ContentPairs = (Vec<(usize, usize)>, Vec<String>);

/// The (A index, B index) pairs of free tensors whose content (dtype, shape, bytes)
/// occurs exactly once among the free tensors of each side, confirmed byte for byte;
/// and a note for each content found more than once (zeros, ones, tied copies), which
/// proves nothing and is left to names and structure.
pub(crate) fn unique_content_pairs(a: &Side, b: &Side) -> Result<ContentPairs> {
    let mut groups: HashMap<ContentKey, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, t) in a
        .spec
        .tensors
        .iter()
        .enumerate()
        .filter(|&(i, _)| a.free[i])
    {
        groups
            .entry((&t.dtype, &t.shape, a.hash[i]))
            .or_default()
            .0
            .push(i);
    }
    for (j, t) in b
        .spec
        .tensors
        .iter()
        .enumerate()
        .filter(|&(j, _)| b.free[j])
    {
        if let Some(g) = groups.get_mut(&(t.dtype.as_str(), t.shape.as_slice(), b.hash[j])) {
            g.1.push(j);
        }
    }
    let mut unique = Vec::new();
    let mut shared = Vec::new();
    for (ia, ib) in groups.values() {
        match (ia.as_slice(), ib.as_slice()) {
            (_, []) => {}
            ([i], [j]) => unique.push((*i, *j)),
            _ => shared.push((ia.clone(), ib.clone())),
        }
    }
    unique.sort_unstable();
    // The hash found them; the bytes prove them.
    let confirmed: Vec<bool> = unique
        .par_iter()
        .map(|&(i, j)| content::equal(a.data, &a.spec.tensors[i], b.data, &b.spec.tensors[j]))
        .collect::<Result<_>>()?;
    let pairs = unique
        .into_iter()
        .zip(confirmed)
        .filter_map(|(p, ok)| ok.then_some(p))
        .collect();
    shared.sort();
    let notes = shared
        .into_iter()
        .map(|(ia, ib)| {
            let t = &a.spec.tensors[ia[0]];
            format!(
                "{} tensor(s) in A and {} in B hold the same {} {:?} content (e.g. '{}'): not unique, paired by name and structure",
                ia.len(),
                ib.len(),
                t.dtype,
                t.shape,
                t.original_name
            )
        })
        .collect();
    Ok((pairs, notes))
}

fn single(a: Option<&TensorInfo>, b: Option<&TensorInfo>) -> Entry {
    Entry {
        a: a.cloned(),
        b: b.cloned(),
        paired_by: None,
        stats: None,
        close: false,
        conversion: None,
    }
}

/// Rounds to 6 significant digits for JSON (keeps it readable and stable).
fn sig6(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    format!("{x:.5e}")
        .parse::<f64>()
        .map(Value::from)
        .unwrap_or(Value::Null)
}

impl DiffResult {
    /// Every pair found (identical, renamed, changed, converted): (in A, in B).
    pub fn paired(&self) -> impl Iterator<Item = (&TensorInfo, &TensorInfo)> {
        self.identical
            .iter()
            .chain(&self.renamed)
            .chain(&self.changed)
            .chain(&self.converted)
            .filter_map(|e| Some((e.a.as_ref()?, e.b.as_ref()?)))
    }

    /// Whether A and B hold the same weights under some naming: nothing added or
    /// removed, and every changed or converted pair close.
    pub fn same_weights(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.iter().chain(&self.converted).all(|e| e.close)
    }

    /// The largest absolute difference over the changed pairs, if any has values.
    fn max_changed(&self) -> Option<f64> {
        self.changed
            .iter()
            .filter_map(|e| e.stats.map(|s| s.max_abs_diff))
            .reduce(f64::max)
    }

    /// One line a person reads first: counts per category.
    pub fn summary_line(&self) -> String {
        let mut parts = vec![format!("{} identical", self.identical.len())];
        if !self.renamed.is_empty() {
            parts.push(format!("{} renamed", self.renamed.len()));
        }
        if !self.changed.is_empty() {
            let close = self.changed.iter().filter(|e| e.close).count();
            let mut detail = vec![];
            if let Some(m) = self.max_changed() {
                detail.push(format!("max abs diff {m:.1e}"));
            }
            if close > 0 {
                detail.push(format!("{close} close"));
            }
            parts.push(if detail.is_empty() {
                format!("{} changed", self.changed.len())
            } else {
                format!("{} changed ({})", self.changed.len(), detail.join(", "))
            });
        }
        for (n, what) in [
            (self.converted.len(), "converted"),
            (self.added.len(), "added"),
            (self.removed.len(), "removed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }

    /// The JSON report: `schema_version`, the files, and one list per category.
    pub fn to_json(&self) -> Value {
        let list = |v: &[Entry]| Value::Array(v.iter().map(entry_json).collect());
        let mut out = json!({
            "schema_version": SCHEMA_VERSION,
            "a": self.a,
            "b": self.b,
            "tolerance": self.tolerance,
            "same_weights": self.same_weights(),
            "summary": self.summary_line(),
            "identical": list(&self.identical),
            "renamed": list(&self.renamed),
            "changed": list(&self.changed),
            "converted": list(&self.converted),
            "added": list(&self.added),
            "removed": list(&self.removed),
            "notes": self.notes,
        });
        if let Some(g) = &self.graph {
            out["graph"] = g.to_json();
        }
        out
    }
}

fn entry_json(e: &Entry) -> Value {
    let mut o = serde_json::Map::new();
    if let Some(t) = &e.a {
        o.insert("a".into(), t.original_name.clone().into());
    }
    if let Some(t) = &e.b {
        o.insert("b".into(), t.original_name.clone().into());
    }
    match (&e.a, &e.b) {
        (Some(a), Some(b)) if a.dtype == b.dtype && a.shape == b.shape => {
            o.insert("dtype".into(), a.dtype.clone().into());
            o.insert("shape".into(), json!(a.shape));
        }
        _ => {
            for (key, t) in [("a", &e.a), ("b", &e.b)] {
                if let Some(t) = t {
                    o.insert(format!("{key}_dtype"), t.dtype.clone().into());
                    o.insert(format!("{key}_shape"), json!(t.shape));
                }
            }
        }
    }
    if let Some(by) = e.paired_by {
        o.insert("paired_by".into(), by.name().into());
    }
    if let Some(c) = &e.conversion {
        o.insert("conversion".into(), c.clone().into());
    }
    if let Some(s) = &e.stats {
        o.insert("max_abs_diff".into(), sig6(s.max_abs_diff));
        o.insert("rel_l2".into(), sig6(s.rel_l2));
        o.insert("cosine".into(), sig6(s.cosine));
        o.insert("frac_differ".into(), sig6(s.frac_differ));
    }
    if e.a.is_some() && e.b.is_some() && e.stats.is_some() {
        o.insert("close".into(), e.close.into());
    }
    Value::Object(o)
}
