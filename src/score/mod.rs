//! The score stage: how well one source tensor fits one target tensor, and why.
//!
//! A score has three parts, each in `[0, 1]`, combined with [`ScoreWeights`]:
//! - **shape**: [`SHAPE_EQUAL`] for equal shapes, [`SHAPE_TRANSPOSE`] for a 2-D weight
//!   stored the other way round (`[in, out]` vs `[out, in]`), [`SHAPE_RESHAPE`] for the
//!   same elements in another shape (conv 1×1 `[o, i, 1, 1]` ↔ linear `[o, i]`, only with
//!   a shape tolerance); anything else is not a candidate.
//! - **name**: token overlap (weighted Jaccard over [`tokenize`]d names, with a small
//!   synonym table and numbers kept as integers), normalized edit distance and longest
//!   common substring.
//! - **hierarchy**: depth similarity, module context (do the already matched ancestors
//!   of the source contain the target?) and order agreement.
//!
//! Candidates are gated on the leaf's role ([`Role`]: weight ↔ weight, bias ↔ bias,
//! running_mean ↔ running_mean, ...) and on the dtype class (float / integer / bool).
//! Everything here is a pure function of precomputed [`TensorFeatures`], so scoring can
//! later be batched or moved to tensors without touching the mapper.

pub mod batched;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Shape score of two equal shapes.
pub const SHAPE_EQUAL: f64 = 1.0;
/// Shape score of a 2-D tensor whose dimensions are swapped (needs a transpose).
pub const SHAPE_TRANSPOSE: f64 = 0.7;
/// Shape score of the same elements in another shape once size-1 dimensions are
/// dropped (conv 1×1 ↔ linear); a candidate only when a shape tolerance is set.
pub const SHAPE_RESHAPE: f64 = 0.5;

/// Share of the name score given to token overlap.
pub const NAME_W_TOKENS: f64 = 0.6;
/// Share of the name score given to normalized edit similarity.
pub const NAME_W_EDIT: f64 = 0.2;
/// Share of the name score given to the longest common substring.
pub const NAME_W_SUBSTRING: f64 = 0.2;

/// Share of the hierarchy score given to depth similarity.
pub const HIER_W_DEPTH: f64 = 0.2;
/// Share of the hierarchy score given to module context (matched ancestors agree).
pub const HIER_W_CONTEXT: f64 = 0.5;
/// Share of the hierarchy score given to order agreement (when both orders are known).
pub const HIER_W_ORDER: f64 = 0.3;
/// Context sub-score when no ancestor of the source tensor has been matched yet.
pub const CONTEXT_UNKNOWN: f64 = 0.5;

/// Weight of a generic token (`model`, `self`, `proj`, ...) in token overlap, relative
/// to 1.0 for every other token: such tokens say little about which tensor is which.
pub const GENERIC_TOKEN_WEIGHT: f64 = 0.5;

/// Tokens that appear in many unrelated names (see [`GENERIC_TOKEN_WEIGHT`]).
pub const GENERIC_TOKENS: &[&str] = &[
    "model", "module", "self", "proj", "base", "net", "block", "backbone",
];

/// Whole name pieces (between `.`, `_`, `-`) replaced before splitting camelCase and
/// digits: fused spellings of common words, and Meta/LLaMA-style single-letter names
/// (`wq` = query, `w1` = gate, `w3` = up, `w2` = down projection).
pub const PIECE_SYNONYMS: &[(&str, &[&str])] = &[
    ("layernorm", &["norm"]),
    ("batchnorm", &["norm"]),
    ("groupnorm", &["norm"]),
    ("rmsnorm", &["norm"]),
    ("instancenorm", &["norm"]),
    ("feedforward", &["mlp"]),
    ("wq", &["q"]),
    ("wk", &["k"]),
    ("wv", &["v"]),
    ("wo", &["o"]),
    ("w1", &["gate"]),
    ("w2", &["down"]),
    ("w3", &["up"]),
];

/// Words with the same meaning in state-dict names, mapped to one canonical token.
pub const WORD_SYNONYMS: &[(&str, &str)] = &[
    ("query", "q"),
    ("key", "k"),
    ("value", "v"),
    ("out", "o"),
    ("output", "o"),
    ("attention", "attn"),
    ("ln", "norm"),
    ("bn", "norm"),
    ("fc", "fc"),
    ("linear", "fc"),
    ("dense", "fc"),
    ("lin", "fc"),
    ("projection", "proj"),
    ("emb", "emb"),
    ("embed", "emb"),
    ("embedding", "emb"),
    ("ffn", "mlp"),
    ("pos", "position"),
    ("tok", "token"),
    ("convolution", "conv"),
    ("layer", "block"),
];

/// Words that place a module after the module named next (`post_attention_layernorm` is
/// the norm *after* attention). The word that follows names the neighbour, not this
/// module, so it is dropped from the tokens (and the mapper uses it as an order hint).
pub const RELATIONAL_AFTER: &[&str] = &["post", "after"];
/// Words that place a module before the module named next (`pre_attention`); see
/// [`RELATIONAL_AFTER`].
pub const RELATIONAL_BEFORE: &[&str] = &["pre", "before"];

/// One token of a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Token {
    /// A canonical lower-case word.
    Word(String),
    /// A number, compared as an integer (`layer.10` comes after `layer.9`).
    Num(u64),
}

impl Token {
    /// Weight in token overlap: [`GENERIC_TOKEN_WEIGHT`] for generic words, else 1.
    pub fn weight(&self) -> f64 {
        match self {
            Token::Word(w) if GENERIC_TOKENS.contains(&w.as_str()) => GENERIC_TOKEN_WEIGHT,
            _ => 1.0,
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => f.write_str(w),
            Token::Num(n) => write!(f, "{n}"),
        }
    }
}

fn singular(word: &str) -> &str {
    // Plurals of container names (layers, blocks, heads, embeddings) say the same thing.
    if word.len() > 4
        && word.ends_with('s')
        && !(word.ends_with("ss")
            || word.ends_with("us")
            || word.ends_with("is")
            || word.ends_with("as"))
    {
        &word[..word.len() - 1]
    } else {
        word
    }
}

fn word_synonym(word: &str) -> &str {
    WORD_SYNONYMS
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, c)| *c)
        .unwrap_or(word)
}

/// Splits `LayerNorm` into `Layer`, `Norm` and `conv12a` into `conv`, `12`, `a`.
fn split_camel_digits(piece: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = piece.as_bytes();
    let mut start = 0;
    for i in 1..bytes.len() {
        let (a, b) = (bytes[i - 1], bytes[i]);
        let boundary = (a.is_ascii_digit() != b.is_ascii_digit())
            || (a.is_ascii_lowercase() && b.is_ascii_uppercase())
            || (i + 1 < bytes.len()
                && a.is_ascii_uppercase()
                && b.is_ascii_uppercase()
                && bytes[i + 1].is_ascii_lowercase());
        if boundary && piece.is_char_boundary(i) {
            out.push(&piece[start..i]);
            start = i;
        }
    }
    if start < piece.len() {
        out.push(&piece[start..]);
    }
    out
}

/// Splits a tensor or module name into canonical tokens: pieces between `.`, `_`, `-`,
/// camelCase and letter/digit boundaries, lower-cased, singular, with synonyms applied
/// ([`PIECE_SYNONYMS`], [`WORD_SYNONYMS`]), `layer norm` / `feed forward` phrases joined,
/// numbers as [`Token::Num`], and the word after a relational word ([`RELATIONAL_AFTER`],
/// [`RELATIONAL_BEFORE`]) dropped.
pub fn tokenize(name: &str) -> Vec<Token> {
    let mut words: Vec<Token> = Vec::new();
    for piece in name
        .split(['.', '_', '-', '/', ' '])
        .filter(|p| !p.is_empty())
    {
        let lower = piece.to_ascii_lowercase();
        if let Some((_, syn)) = PIECE_SYNONYMS.iter().find(|(p, _)| *p == lower) {
            words.extend(syn.iter().map(|w| Token::Word(w.to_string())));
            continue;
        }
        for sub in split_camel_digits(piece) {
            if sub.bytes().all(|b| b.is_ascii_digit()) {
                // Numbers longer than u64 are not indices; keep them as words.
                match sub.parse::<u64>() {
                    Ok(n) => words.push(Token::Num(n)),
                    Err(_) => words.push(Token::Word(sub.to_string())),
                }
            } else {
                let l = sub.to_ascii_lowercase();
                words.push(Token::Word(word_synonym(singular(&l)).to_string()));
            }
        }
    }
    // Phrases: "layer norm" / "batch norm" → norm, "feed forward" → mlp.
    let mut joined: Vec<Token> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let next_is = |w: &str| matches!(words.get(i + 1), Some(Token::Word(x)) if x == w);
        match &words[i] {
            Token::Word(w)
                if (w == "block" || w == "batch" || w == "group" || w == "rms")
                    && next_is("norm") =>
            {
                joined.push(Token::Word("norm".into()));
                i += 2;
            }
            Token::Word(w) if w == "feed" && next_is("forward") => {
                joined.push(Token::Word("mlp".into()));
                i += 2;
            }
            t => {
                joined.push(t.clone());
                i += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(joined.len());
    let mut skip_next_word = false;
    for t in joined {
        if skip_next_word {
            skip_next_word = false;
            if matches!(t, Token::Word(_)) {
                continue;
            }
        }
        if let Token::Word(w) = &t {
            skip_next_word =
                RELATIONAL_AFTER.contains(&w.as_str()) || RELATIONAL_BEFORE.contains(&w.as_str());
        }
        out.push(t);
    }
    out
}

/// The name as compared by edit distance: tokens joined with `.`.
pub fn normalized_name(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// Weighted Jaccard overlap of two token sets (each token counted once).
pub fn token_jaccard(a: &[Token], b: &[Token]) -> f64 {
    let mut sa: Vec<&Token> = a.iter().collect();
    sa.sort();
    sa.dedup();
    let mut sb: Vec<&Token> = b.iter().collect();
    sb.sort();
    sb.dedup();
    let (mut i, mut j) = (0, 0);
    let (mut inter, mut union) = (0.0, 0.0);
    while i < sa.len() || j < sb.len() {
        match (sa.get(i), sb.get(j)) {
            (Some(x), Some(y)) if x == y => {
                inter += x.weight();
                union += x.weight();
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                union += x.weight();
                i += 1;
            }
            (Some(_), Some(y)) => {
                union += y.weight();
                j += 1;
            }
            (Some(x), None) => {
                union += x.weight();
                i += 1;
            }
            (None, Some(y)) => {
                union += y.weight();
                j += 1;
            }
            (None, None) => break,
        }
    }
    if union == 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// `strsim::normalized_levenshtein`, bit-parallel (Myers/Hyyrö) when both names are ASCII
/// and the shorter fits in 64 bytes: the same value, without the per-call allocations that
/// dominate scoring millions of pairs on large checkpoints.
pub fn normalized_levenshtein(a: &str, b: &str) -> f64 {
    let (x, y) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if x.is_empty() || x.len() > 64 || !x.is_ascii() || !y.is_ascii() {
        return strsim::normalized_levenshtein(a, b);
    }
    let (x, y) = (x.as_bytes(), y.as_bytes());
    // Bit i of peq[c] is set where x[i] == c.
    let mut peq = [0u64; 128];
    for (i, &c) in x.iter().enumerate() {
        peq[c as usize] |= 1 << i;
    }
    let last = 1u64 << (x.len() - 1);
    let (mut pv, mut mv, mut dist) = (!0u64, 0u64, x.len());
    for &c in y {
        let eq = peq[c as usize];
        let xv = eq | mv;
        let xh = ((eq & pv).wrapping_add(pv) ^ pv) | eq;
        let ph = mv | !(xh | pv);
        let mh = pv & xh;
        if ph & last != 0 {
            dist += 1;
        } else if mh & last != 0 {
            dist -= 1;
        }
        // Row 0 of the distance table grows by one per column: shift a 1 in.
        let ph = (ph << 1) | 1;
        let mh = mh << 1;
        pv = mh | !(xv | ph);
        mv = ph & xv;
    }
    1.0 - dist as f64 / y.len() as f64
}

/// Length of the longest common substring divided by the longer length (0 when either
/// string is empty).
pub fn substring_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    // Walk each diagonal (a fixed offset between the two strings) counting runs of equal
    // bytes; a diagonal no longer than the best run so far cannot beat it. No table, no
    // allocation: this runs for millions of name pairs on large checkpoints.
    let (n, m) = (a.len() as isize, b.len() as isize);
    let mut best = 0usize;
    // Offsets ordered from the main diagonal outwards: long diagonals first.
    for k in 0..2 * n.max(m) {
        let d = if k % 2 == 0 { k / 2 } else { -(k + 1) / 2 };
        if d <= -n || d >= m {
            continue;
        }
        let (i0, j0) = if d >= 0 { (0, d) } else { (-d, 0) };
        let len = (n - i0).min(m - j0) as usize;
        if len <= best {
            continue;
        }
        let (x, y) = (&a[i0 as usize..], &b[j0 as usize..]);
        let mut run = 0usize;
        for t in 0..len {
            if x[t] == y[t] {
                run += 1;
                best = best.max(run);
            } else {
                run = 0;
            }
        }
    }
    best as f64 / a.len().max(b.len()) as f64
}

/// The role of a tensor in its module, from its leaf name. Only tensors of the same role
/// are candidates for each other (a bare parameter may also become a module's weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `weight` (also `gamma`, `scale`, `kernel`, `*_weight`).
    Weight,
    /// `bias` (also `beta`, `*_bias`).
    Bias,
    /// `running_mean` (also `moving_mean`).
    RunningMean,
    /// `running_var` (also `moving_var`, `moving_variance`).
    RunningVar,
    /// `num_batches_tracked`: optional, old checkpoints lack it.
    NumBatchesTracked,
    /// A bare parameter or buffer whose leaf is its own name (`cls_token`, `pos_embed`).
    Param,
}

impl Role {
    /// Whether a tensor of this role may be missing from a module without the module
    /// becoming a different kind of module (left out of module signatures).
    pub fn optional(self) -> bool {
        self == Role::NumBatchesTracked
    }

    /// The leaf name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::RunningMean => "running_mean",
            Role::RunningVar => "running_var",
            Role::NumBatchesTracked => "num_batches_tracked",
            Role::Param => "parameter",
        }
    }
}

/// Leaf names of module roles, with their synonyms from other frameworks.
pub const LEAF_ROLES: &[(&str, Role)] = &[
    ("weight", Role::Weight),
    ("bias", Role::Bias),
    ("running_mean", Role::RunningMean),
    ("running_var", Role::RunningVar),
    ("num_batches_tracked", Role::NumBatchesTracked),
    ("gamma", Role::Weight),
    ("beta", Role::Bias),
    ("scale", Role::Weight),
    ("kernel", Role::Weight),
    ("moving_mean", Role::RunningMean),
    ("moving_var", Role::RunningVar),
    ("moving_variance", Role::RunningVar),
];

/// The role of a leaf, and for `X_weight` / `X_bias` leaves (`in_proj_weight` of
/// `nn.MultiheadAttention`) the name `X` of the sub-module they stand for.
pub fn leaf_role(leaf: &str) -> (Role, Option<&str>) {
    if let Some((_, r)) = LEAF_ROLES.iter().find(|(l, _)| *l == leaf) {
        return (*r, None);
    }
    for (suffix, role) in [("_weight", Role::Weight), ("_bias", Role::Bias)] {
        if let Some(prefix) = leaf.strip_suffix(suffix) {
            if !prefix.is_empty() {
                return (role, Some(prefix));
            }
        }
    }
    (Role::Param, None)
}

/// Whether tensors of roles `a` (source) and `b` (target) may map onto each other.
pub fn roles_compatible(a: Role, b: Role) -> bool {
    a == b
        || matches!(
            (a, b),
            (Role::Param, Role::Weight) | (Role::Weight, Role::Param)
        )
}

/// The class of a dtype: tensors of different classes never map (a float parameter is
/// not an integer buffer). Unknown dtypes are compatible with everything.
pub fn dtype_class(dtype: &str) -> &'static str {
    if dtype == "bool" {
        "bool"
    } else if dtype.starts_with("int") || dtype.starts_with("uint") {
        "int"
    } else if dtype.starts_with("float")
        || dtype.starts_with("bfloat")
        || dtype.starts_with("complex")
    {
        "float"
    } else {
        "unknown"
    }
}

/// How a source shape relates to a target shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeRelation {
    /// Equal shapes.
    Equal,
    /// A 2-D tensor with its two dimensions swapped.
    Transpose,
    /// The same number of elements and the same dimensions once size-1 dimensions are
    /// dropped (only with a shape tolerance).
    Reshape,
}

impl ShapeRelation {
    /// The shape score of this relation.
    pub fn score(self) -> f64 {
        match self {
            ShapeRelation::Equal => SHAPE_EQUAL,
            ShapeRelation::Transpose => SHAPE_TRANSPOSE,
            ShapeRelation::Reshape => SHAPE_RESHAPE,
        }
    }
}

/// How `source` relates to `target`, or `None` when they are not candidates. Transposes
/// are considered for 2-D tensors; reshapes only when `allow_reshape`.
pub fn shape_relation(
    source: &[i64],
    target: &[i64],
    allow_reshape: bool,
) -> Option<ShapeRelation> {
    if source == target {
        return Some(ShapeRelation::Equal);
    }
    if source.len() == 2 && target.len() == 2 && source[0] == target[1] && source[1] == target[0] {
        return Some(ShapeRelation::Transpose);
    }
    if allow_reshape {
        let squeeze = |s: &[i64]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(source) == squeeze(target) {
            return Some(ShapeRelation::Reshape);
        }
    }
    None
}

/// The shape used to compare module signatures: 2-D shapes with their dimensions sorted,
/// so that a module and its transposed counterpart have the same signature.
pub fn loose_shape(shape: &[i64]) -> Vec<i64> {
    if shape.len() == 2 && shape[0] > shape[1] {
        vec![shape[1], shape[0]]
    } else {
        shape.to_vec()
    }
}

/// Weights of the three score parts. Validated (non-negative, finite, sum > 0) and
/// normalized to sum to 1 by [`ScoreWeights::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreWeights {
    /// Weight of the shape score.
    pub shape: f64,
    /// Weight of the name score.
    pub name: f64,
    /// Weight of the hierarchy score.
    pub hierarchy: f64,
}

/// Default weight of the shape score.
pub const DEFAULT_SHAPE_WEIGHT: f64 = 0.5;
/// Default weight of the name score.
pub const DEFAULT_NAME_WEIGHT: f64 = 0.3;
/// Default weight of the hierarchy score.
pub const DEFAULT_HIERARCHY_WEIGHT: f64 = 0.2;

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            shape: DEFAULT_SHAPE_WEIGHT,
            name: DEFAULT_NAME_WEIGHT,
            hierarchy: DEFAULT_HIERARCHY_WEIGHT,
        }
    }
}

impl ScoreWeights {
    /// Validated, normalized weights.
    pub fn new(shape: f64, name: f64, hierarchy: f64) -> Result<Self> {
        for (what, v) in [("shape", shape), ("name", name), ("hierarchy", hierarchy)] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidArgument {
                    what: "score weights".into(),
                    message: format!("{what}={v}: each weight must be a finite number ≥ 0"),
                });
            }
        }
        let sum = shape + name + hierarchy;
        if sum <= 0.0 {
            return Err(Error::InvalidArgument {
                what: "score weights".into(),
                message: "the weights sum to 0; give at least one positive weight".into(),
            });
        }
        Ok(ScoreWeights {
            shape: shape / sum,
            name: name / sum,
            hierarchy: hierarchy / sum,
        })
    }

    /// These weights with the name weight set to 0 (renormalized): shapes and structure alone.
    pub fn without_names(self) -> Self {
        ScoreWeights::new(self.shape, 0.0, self.hierarchy).unwrap_or(ScoreWeights {
            shape: 0.7,
            name: 0.0,
            hierarchy: 0.3,
        })
    }
}

impl FromStr for ScoreWeights {
    type Err = Error;

    /// Parses `shape=0.5,name=0.3,hierarchy=0.2`; parts not given keep their default.
    fn from_str(s: &str) -> Result<Self> {
        let d = ScoreWeights::default();
        let (mut shape, mut name, mut hierarchy) = (d.shape, d.name, d.hierarchy);
        let bad = |m: String| Error::InvalidArgument {
            what: "--weights".into(),
            message: m,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                bad(format!(
                    "'{part}': expected key=value, e.g. shape=0.5,name=0.3,hierarchy=0.2"
                ))
            })?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("'{part}': '{}' is not a number", v.trim())))?;
            match k.trim() {
                "shape" => shape = v,
                "name" => name = v,
                "hierarchy" | "hier" => hierarchy = v,
                other => {
                    return Err(bad(format!(
                        "unknown weight '{other}'; use shape, name and hierarchy"
                    )))
                }
            }
        }
        ScoreWeights::new(shape, name, hierarchy)
    }
}

/// What the scorer knows about one tensor, computed once per model.
#[derive(Debug, Clone)]
pub struct TensorFeatures {
    /// Tokens of the (normalized) name.
    pub tokens: Vec<Token>,
    /// The tokens joined with `.`, for edit distance and substrings.
    pub normalized: String,
    /// The leaf's role.
    pub role: Role,
    /// The shape.
    pub shape: Vec<i64>,
    /// The dtype class ([`dtype_class`]).
    pub dtype_class: &'static str,
    /// Module depth.
    pub depth: usize,
}

impl TensorFeatures {
    /// Features of a tensor from its name, leaf, shape, dtype and depth.
    pub fn new(name: &str, leaf: &str, shape: &[i64], dtype: &str, depth: usize) -> Self {
        let tokens = tokenize(name);
        TensorFeatures {
            normalized: normalized_name(&tokens),
            tokens,
            role: leaf_role(leaf).0,
            shape: shape.to_vec(),
            dtype_class: dtype_class(dtype),
            depth,
        }
    }
}

/// What the mapper knows about a pair beyond the two tensors: how far the already
/// matched ancestors of the source agree with the target, and the local order ranks.
#[derive(Debug, Clone, Copy, Default)]
pub struct PairContext {
    /// Share of the source's matched ancestors whose counterparts contain the target;
    /// `None` when no ancestor is matched.
    pub context: Option<f64>,
    /// The source tensor's rank in `[0, 1]` within its matched ancestor, if known.
    pub source_rank: Option<f64>,
    /// The target tensor's rank in `[0, 1]` within that ancestor's counterpart, if known.
    pub target_rank: Option<f64>,
}

/// A pair's score and every part of it, for reports and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreBreakdown {
    /// The weighted total in `[0, 1]`.
    pub total: f64,
    /// Shape score ([`ShapeRelation::score`]).
    pub shape: f64,
    /// Name score (weighted mix of `tokens`, `edit`, `substring`).
    pub name: f64,
    /// Hierarchy score (weighted mix of `depth`, `context` and, when known, `order`).
    pub hierarchy: f64,
    /// How the shapes relate.
    pub shape_relation: ShapeRelation,
    /// Weighted Jaccard overlap of the name tokens.
    pub tokens: f64,
    /// Normalized Levenshtein similarity of the normalized names.
    pub edit: f64,
    /// Longest common substring over the longer normalized name.
    pub substring: f64,
    /// Depth similarity: `1 / (1 + |depth difference|)`.
    pub depth: f64,
    /// Module context ([`PairContext::context`], or [`CONTEXT_UNKNOWN`]).
    pub context: f64,
    /// Order agreement `1 − |rank difference|`, when both ranks are known.
    pub order: Option<f64>,
}

impl ScoreBreakdown {
    /// The total this pair would have without its order part: what the score says when
    /// no order is known (to tell when an order alone decided).
    pub fn total_without_order(&self, weights: &ScoreWeights) -> f64 {
        let hierarchy = (HIER_W_DEPTH * self.depth + HIER_W_CONTEXT * self.context)
            / (HIER_W_DEPTH + HIER_W_CONTEXT);
        weights.shape * self.shape + weights.name * self.name + weights.hierarchy * hierarchy
    }

    /// A breakdown where only the shape part is known (a pair decided by something other
    /// than the scores: a pin, equal content), with the given total.
    pub fn shape_only(relation: ShapeRelation, total: f64) -> ScoreBreakdown {
        ScoreBreakdown {
            total,
            shape: relation.score(),
            name: 0.0,
            hierarchy: 0.0,
            shape_relation: relation,
            tokens: 0.0,
            edit: 0.0,
            substring: 0.0,
            depth: 0.0,
            context: 0.0,
            order: None,
        }
    }
}

/// Name similarity of two tensors: (score, tokens, edit, substring).
pub fn name_similarity(a: &TensorFeatures, b: &TensorFeatures) -> (f64, f64, f64, f64) {
    let tokens = token_jaccard(&a.tokens, &b.tokens);
    let edit = normalized_levenshtein(&a.normalized, &b.normalized);
    let substring = substring_similarity(&a.normalized, &b.normalized);
    (
        NAME_W_TOKENS * tokens + NAME_W_EDIT * edit + NAME_W_SUBSTRING * substring,
        tokens,
        edit,
        substring,
    )
}

/// Whether two tensors may map at all: role gate, dtype class gate and shape relation.
pub fn candidate(
    s: &TensorFeatures,
    t: &TensorFeatures,
    allow_reshape: bool,
) -> Option<ShapeRelation> {
    if !roles_compatible(s.role, t.role) {
        return None;
    }
    if s.dtype_class != t.dtype_class && s.dtype_class != "unknown" && t.dtype_class != "unknown" {
        return None;
    }
    shape_relation(&s.shape, &t.shape, allow_reshape)
}

/// Scores a source tensor against a target tensor, or `None` when they are not
/// candidates ([`candidate`]).
pub fn score_pair(
    s: &TensorFeatures,
    t: &TensorFeatures,
    ctx: &PairContext,
    weights: &ScoreWeights,
    allow_reshape: bool,
) -> Option<ScoreBreakdown> {
    score_with(s, t, ctx, weights, allow_reshape, name_similarity)
}

/// A total that [`score_pair`]'s total never exceeds, without the two string metrics
/// (edit and substring similarity are bounded by the names' lengths), or `None` when
/// the tensors are not candidates. Lets a caller that wants only the best few of many
/// candidates skip the exact scores that cannot reach them.
pub fn score_upper_bound(
    s: &TensorFeatures,
    t: &TensorFeatures,
    ctx: &PairContext,
    weights: &ScoreWeights,
    allow_reshape: bool,
) -> Option<f64> {
    let bound = |a: &TensorFeatures, b: &TensorFeatures| {
        let tokens = token_jaccard(&a.tokens, &b.tokens);
        let (x, y) = (&a.normalized, &b.normalized);
        let (short, long) = (x.len().min(y.len()), x.len().max(y.len()));
        // The edit distance is at least the length difference, and a common substring is
        // at most the shorter name (lengths in bytes equal characters for ASCII names).
        let (edit, substring) = if long == 0 || !x.is_ascii() || !y.is_ascii() {
            (1.0, 1.0)
        } else {
            (
                1.0 - (long - short) as f64 / long as f64,
                short as f64 / long as f64,
            )
        };
        (
            NAME_W_TOKENS * tokens + NAME_W_EDIT * edit + NAME_W_SUBSTRING * substring,
            tokens,
            edit,
            substring,
        )
    };
    score_with(s, t, ctx, weights, allow_reshape, bound).map(|b| b.total)
}

/// [`score_pair`] with the name sub-scores given by `name_parts` (score, tokens, edit,
/// substring).
fn score_with(
    s: &TensorFeatures,
    t: &TensorFeatures,
    ctx: &PairContext,
    weights: &ScoreWeights,
    allow_reshape: bool,
    name_parts: impl FnOnce(&TensorFeatures, &TensorFeatures) -> (f64, f64, f64, f64),
) -> Option<ScoreBreakdown> {
    let relation = candidate(s, t, allow_reshape)?;
    let shape = relation.score();
    let (name, tokens, edit, substring) = if weights.name > 0.0 {
        name_parts(s, t)
    } else {
        (0.0, 0.0, 0.0, 0.0)
    };
    let depth = 1.0 / (1.0 + (s.depth as f64 - t.depth as f64).abs());
    let context = ctx.context.unwrap_or(CONTEXT_UNKNOWN);
    let order = match (ctx.source_rank, ctx.target_rank) {
        (Some(a), Some(b)) => Some(1.0 - (a - b).abs().min(1.0)),
        _ => None,
    };
    let (mut h, mut hw) = (
        HIER_W_DEPTH * depth + HIER_W_CONTEXT * context,
        HIER_W_DEPTH + HIER_W_CONTEXT,
    );
    if let Some(o) = order {
        h += HIER_W_ORDER * o;
        hw += HIER_W_ORDER;
    }
    let hierarchy = h / hw;
    let total = weights.shape * shape + weights.name * name + weights.hierarchy * hierarchy;
    Some(ScoreBreakdown {
        total,
        shape,
        name,
        hierarchy,
        shape_relation: relation,
        tokens,
        edit,
        substring,
        depth,
        context,
        order,
    })
}

/// Similarity of two module-relative names for telling look-alike modules apart:
/// weighted Jaccard over their word tokens only (numbers are order, handled elsewhere).
pub fn local_name_similarity(a: &[Token], b: &[Token]) -> f64 {
    let wa: Vec<Token> = a
        .iter()
        .filter(|t| matches!(t, Token::Word(_)))
        .cloned()
        .collect();
    let wb: Vec<Token> = b
        .iter()
        .filter(|t| matches!(t, Token::Word(_)))
        .cloned()
        .collect();
    token_jaccard(&wa, &wb)
}

#[cfg(test)]
mod tests;
