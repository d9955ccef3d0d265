//! The mapping engine: which source tensor goes to which target tensor, how sure we are,
//! and why.
//!
//! Structure before strings. [`Mapper::suggest_mapping`] works in stages:
//! 1. **Many-to-one relations** among tensors that have no same-shape counterpart at all
//!    (per-expert weights against a stacked 3-D expert tensor) are found first and taken
//!    out of the one-to-one problem, each with its reason.
//! 2. **Structure**: tensors are grouped into units (a module's weight, bias and buffers
//!    map together) under the module tree. Starting at the two roots, modules and units
//!    are paired top-down by their signatures (the multiset of their units' roles and
//!    shapes); repeated look-alike blocks are told apart by their names, else by order
//!    (execution order, indices in names, file order), never by a coin toss; containers
//!    that exist on one side only are opened up; fused `qkv`-style tensors against
//!    separate `q`/`k`/`v` are recognized inside matched modules.
//! 3. **Leftovers** are scored (shape, name, hierarchy: [`crate::score`]) and assigned
//!    one-to-one per block of candidates ([`crate::assign`]); ties stay unmatched.
//! 4. Each pair gets its transform (transpose, reshape; square weights whose orientation
//!    the shape cannot tell are flagged with the evidence), its score breakdown, its
//!    confidence (margin to the runner-up) and alternatives; the threshold and strategy
//!    apply; every tensor left over gets a reason.

mod constraints;
mod evidence;
mod finish;
mod relations;
mod renaming;
mod side;
mod structure;

pub use constraints::{parse_pair, Constraints};
pub use renaming::BlockRule;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::score::ScoreBreakdown;
use crate::score::ScoreWeights;
use crate::spec::ModelSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::str::FromStr;

/// Default score threshold of [`Strategy::BestMatch`].
pub const DEFAULT_THRESHOLD: f64 = 0.6;
/// Lowest score [`Strategy::Conservative`] accepts, whatever the threshold.
pub const CONSERVATIVE_MIN_SCORE: f64 = 0.75;
/// Lowest confidence (margin to the runner-up) [`Strategy::Conservative`] accepts for a
/// pair decided by scores alone.
pub const CONSERVATIVE_MIN_MARGIN: f64 = 0.05;
/// Number of alternatives kept per match.
pub const MAX_ALTERNATIVES: usize = 3;

/// Where an order of tensors comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Execution order recorded by running the model (trace).
    Dynamic,
    /// Execution order read from the model's graph without running it.
    Static,
    /// Registration order (TorchScript lists tensors as modules registered them).
    Registration,
    /// The key order of a checkpoint file (usually registration order).
    File,
    /// No usable order: only numbers inside names (safetensors keys are sorted).
    NamesOnly,
    /// Nothing known.
    None,
}

/// An order of a model's tensors, given from outside (the trace stage, or a file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorOrder {
    /// Where it comes from; `Dynamic` and `Static` are trusted as execution order.
    pub kind: OrderKind,
    /// Tensor names (normalized or as in the file), first to last. Tensors not listed
    /// have no rank.
    pub names: Vec<String>,
}

/// How the scored stage finds the candidate targets of the units structure left over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateSearch {
    /// Exact while every leftover unit has at most [`MAX_EXACT_CANDIDATES`] same-shape
    /// candidates, batched beyond: there the exact search would have to cut its list by
    /// context alone, where the batched score ranks by name, indices and position.
    #[default]
    Auto,
    /// Every same-shape, same-role target unit is scored exactly (past
    /// [`MAX_EXACT_CANDIDATES`], the nearest in matched context are kept).
    Exact,
    /// The batched approximate score of [`crate::score::batched`] (a native loop on the
    /// CPU, tensor operations on a CUDA device; tiled by shape class) keeps the [`crate::score::batched::DEFAULT_TOP_K`]
    /// best targets per source tensor; only those are scored exactly, in parallel.
    Batched,
}

impl CandidateSearch {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            CandidateSearch::Auto => "auto",
            CandidateSearch::Exact => "exact",
            CandidateSearch::Batched => "batched",
        }
    }
}

impl FromStr for CandidateSearch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(CandidateSearch::Auto),
            "exact" => Ok(CandidateSearch::Exact),
            "batched" => Ok(CandidateSearch::Batched),
            _ => Err(Error::invalid(
                "--candidates",
                format!("'{s}': use auto, exact or batched"),
            )),
        }
    }
}

/// Most same-shape candidate units the exact search scores per leftover unit; see
/// [`CandidateSearch::Auto`].
pub const MAX_EXACT_CANDIDATES: usize = 64;

/// How the scored stage ran: which candidate search, where, and how much it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ScoringSummary {
    /// The search used (`exact` or `batched`; `auto` resolves to one of them).
    pub search: String,
    /// Where the batched score ran (`cpu`, `cuda:0`); empty when it did not run.
    pub device: String,
    /// Leftover source units scored.
    pub leftover_units: usize,
    /// Unit pairs scored exactly.
    pub exact_pairs: usize,
}

/// Options of a [`Mapper`].
#[derive(Debug, Clone)]
pub struct MapperOptions {
    /// Shape tolerance in `[0, 1]`: above 0, tensors with the same elements in another
    /// shape (size-1 dimensions dropped, e.g. conv 1×1 ↔ linear) become candidates,
    /// scored [`crate::score::SHAPE_RESHAPE`]. Transposes are always candidates.
    pub shape_tolerance: f64,
    /// Incompatible components: (source chunks, target chunks). A tensor whose name has
    /// a component (or `_`-separated piece) in one set never maps to a tensor whose name
    /// has one in the other set, in either direction.
    pub incompatible: Vec<(Vec<String>, Vec<String>)>,
    /// The source's execution (or other) order, if known. This is the hook for the trace
    /// stage: without it, the file's key order is used (none for safetensors).
    pub source_order: Option<TensorOrder>,
    /// The target's execution (or other) order, if known (see `source_order`).
    pub target_order: Option<TensorOrder>,
    /// How candidates of leftover units are found.
    pub candidates: CandidateSearch,
    /// Where the batched score runs (checked before the engine runs); the mapping is the
    /// same on every device.
    pub device: Device,
    /// Pairs the user pinned or forbade; the rest is solved around them.
    pub constraints: Constraints,
}

impl Default for MapperOptions {
    fn default() -> Self {
        MapperOptions {
            shape_tolerance: 0.0,
            incompatible: vec![],
            source_order: None,
            target_order: None,
            candidates: CandidateSearch::Auto,
            device: Device::Cpu,
            constraints: Constraints::default(),
        }
    }
}

/// How pairs are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Everything the evidence supports at or above the threshold.
    #[default]
    BestMatch,
    /// Only high-confidence pairs: score ≥ [`CONSERVATIVE_MIN_SCORE`], no ambiguity flag,
    /// not decided by file order alone, margin ≥ [`CONSERVATIVE_MIN_MARGIN`] when decided by
    /// scores.
    Conservative,
    /// Shapes and order alone (for complete renames): names are not used.
    ShapeOnly,
}

impl Strategy {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::BestMatch => "best_match",
            Strategy::Conservative => "conservative",
            Strategy::ShapeOnly => "shape_only",
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.replace('-', "_").as_str() {
            "best_match" | "best" => Ok(Strategy::BestMatch),
            "conservative" => Ok(Strategy::Conservative),
            "shape_only" => Ok(Strategy::ShapeOnly),
            _ => Err(Error::InvalidArgument {
                what: "strategy".into(),
                message: format!("'{s}': use best_match, conservative or shape_only"),
            }),
        }
    }
}

/// Options of one [`Mapper::suggest_mapping`] call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuggestOptions {
    /// Pairs scoring below this are left unmatched (applied after assignment).
    pub threshold: f64,
    /// The strategy.
    pub strategy: Strategy,
    /// Weights of the score parts.
    pub weights: ScoreWeights,
    /// Whether every pair lists its best other targets ([`Match::alternatives`]). Pairs
    /// decided by scores always do (their confidence is the margin to the runner-up); for
    /// the others it is what a review shows, and costs a scoring pass over every pair:
    /// `map` without `--json` or `--report` leaves it out.
    pub alternatives: bool,
}

impl Default for SuggestOptions {
    fn default() -> Self {
        SuggestOptions {
            threshold: DEFAULT_THRESHOLD,
            strategy: Strategy::BestMatch,
            weights: ScoreWeights::default(),
            alternatives: true,
        }
    }
}

impl SuggestOptions {
    /// Checks the threshold (a number in `[0, 1]`).
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::InvalidArgument {
                what: "threshold".into(),
                message: format!("{}: give a number between 0 and 1", self.threshold),
            });
        }
        ScoreWeights::new(
            self.weights.shape,
            self.weights.name,
            self.weights.hierarchy,
        )
        .map(|_| ())
    }
}

pub use crate::mapping::{Conversion, ConversionKind, Transform};

/// Whether a pair came with its module (weight, bias and buffers together) or alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchType {
    /// Matched with the rest of its module group.
    Group,
    /// Matched on its own (a bare parameter, or a one-tensor module).
    Individual,
}

/// What decided a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The only module (or unit) with this signature on both sides.
    Unique,
    /// Look-alikes told apart by their names.
    Names,
    /// The last look-alike left once the others were told apart.
    Elimination,
    /// A look-alike whose name places it before or after a matched module
    /// (`post_attention_layernorm`), found on that side of the counterpart in execution order.
    Relation,
    /// Look-alikes told apart by execution order.
    ExecutionOrder,
    /// A look-alike decided by the renaming the other repeated blocks follow
    /// (`layers.#`: `inp` → `alpha`).
    BlockRule,
    /// A look-alike of an ordinal family (`a`/`b`/`c`, `conv1`/`conv2`/`conv3`) whose
    /// matched members map rank for rank onto a family of the other side.
    OrdinalFamily,
    /// A look-alike placed next to the counterpart of its matched sibling in the target's
    /// execution order (the norm beside an output projection).
    SiblingAnchor,
    /// Look-alikes told apart by indices in their names (`layer.3`, `conv_a`).
    NameIndices,
    /// Look-alikes told apart by file or registration order only (weaker).
    FileOrder,
    /// Modules paired by similar (not equal) content.
    Similarity,
    /// Scored and assigned (leftovers).
    Score,
    /// Pinned by the user (`--pin`, `--rules`, an edited mapping), not decided here.
    Pinned,
}

impl Resolution {
    /// How far a decision of this kind is trusted, in `[0, 1]`, for decisions taken by
    /// structural evidence; `None` for [`Resolution::Score`], whose confidence is the margin
    /// of its score over the runner-up. See [`Match::confidence`].
    pub fn confidence(self) -> Option<f64> {
        Some(match self {
            Resolution::Unique | Resolution::Pinned => 1.0,
            Resolution::Names
            | Resolution::Relation
            | Resolution::ExecutionOrder
            | Resolution::BlockRule
            | Resolution::OrdinalFamily
            | Resolution::SiblingAnchor
            | Resolution::Elimination => 0.9,
            Resolution::NameIndices => 0.8,
            Resolution::Similarity => 0.7,
            Resolution::FileOrder => 0.3,
            Resolution::Score => return None,
        })
    }
}

/// One source tensor mapped to one target tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Source name (wrapper prefixes stripped).
    pub source: String,
    /// Source name as written in the source file.
    pub source_original: String,
    /// Target name (as in the target).
    pub target: String,
    /// Source shape.
    pub source_shape: Vec<i64>,
    /// Target shape.
    pub target_shape: Vec<i64>,
    /// The score (`breakdown.total`).
    pub score: f64,
    /// Every part of the score.
    pub breakdown: ScoreBreakdown,
    /// How to change the tensor to fit (`None`: copied as is).
    pub transform: Option<Transform>,
    /// Group or individual.
    pub match_type: MatchType,
    /// What decided the pair.
    pub resolution: Resolution,
    /// Human-readable account of the decision (e.g. which look-alikes order chose among).
    pub resolution_detail: String,
    /// How sure the decision is, in `[0, 1]`. For a pair decided by scores (resolution
    /// `score`): the margin of its score over the best alternative target. For a pair decided
    /// by structure, the trust in that kind of evidence ([`Resolution::confidence`]): 1 for a
    /// unique signature or a pin, 0.9 for names, relations, execution order, block rules, ordinal
    /// families, sibling anchors and elimination, 0.8 for indices in names, 0.7 for similar
    /// content, 0.3 for file order alone (look-alikes that score alike would otherwise all
    /// show 0).
    pub confidence: f64,
    /// The best other targets and their scores.
    pub alternatives: Vec<Alternative>,
    /// Set when the pair is uncertain in a way the user must check (e.g. a square weight
    /// whose orientation the shapes cannot tell), with the evidence.
    pub ambiguous: Option<String>,
}

impl Match {
    /// Why the pair needs a person's review, or `None`. One definition for every report
    /// (terminal, `--quiet`, `--json`, HTML) and for `--fail-on review`: the pair is flagged
    /// ambiguous (a square weight whose orientation the shapes cannot tell, look-alikes
    /// decided by file order only), or it was decided by scores and an alternative target
    /// scored within [`REVIEW_MIN_MARGIN`] of it (or better).
    pub fn needs_review(&self) -> Option<String> {
        if let Some(why) = &self.ambiguous {
            return Some(why.clone());
        }
        if self.resolution != Resolution::Score {
            return None;
        }
        let runner_up = self.alternatives.first()?;
        (runner_up.score > self.score - REVIEW_MIN_MARGIN).then(|| {
            format!(
                "decided by scores: {} scored {:.3} against {:.3}",
                runner_up.target, runner_up.score, self.score
            )
        })
    }
}

/// Smallest margin to the runner-up that a pair decided by scores needs to go without
/// review ([`Match::needs_review`]).
pub const REVIEW_MIN_MARGIN: f64 = CONSERVATIVE_MIN_MARGIN;

/// Another candidate target of a matched source tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// The target name.
    pub target: String,
    /// Its score.
    pub score: f64,
}

/// Why a tensor is left unmatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnmatchedReason {
    /// No tensor of a compatible shape (and role) on the other side.
    NoShapeCandidate,
    /// Its best pair scored below the threshold.
    BelowThreshold {
        /// The would-be counterpart.
        candidate: String,
        /// Its score.
        score: f64,
        /// The threshold in force.
        threshold: f64,
    },
    /// Its candidates went to better pairs.
    LostTo {
        /// The best candidate.
        candidate: String,
        /// Who got it instead.
        taken_by: String,
    },
    /// Look-alike candidates that neither names nor order tell apart.
    Ambiguous {
        /// The candidates.
        candidates: Vec<String>,
    },
    /// Every candidate belongs to an incompatible component.
    IncompatibleComponent,
    /// Its module matched one whose group has no tensor of this role.
    MissingInCounterpart {
        /// The matched counterpart module.
        counterpart: String,
    },
    /// Takes part in a conversion (split, concat, stack, ...): many-to-one or one-to-many,
    /// which a one-to-one entry cannot express; the mapping file lists it under
    /// `conversions`.
    Converted {
        /// The conversion.
        conversion: Conversion,
    },
    /// Shares storage with a tensor that is mapped (tied weights).
    Tied {
        /// The tensor it is tied to.
        to: String,
    },
    /// A non-persistent buffer: listed by the model but not part of its state dict.
    NotInStateDict,
    /// A tensor of the same name on the other side has another shape (PyTorch's and HF's
    /// "size mismatch"), and no other tensor fits.
    Mismatched {
        /// The same-name tensor on the other side, as written there.
        other: String,
        /// This tensor's shape.
        shape: Vec<i64>,
        /// The other tensor's shape.
        other_shape: Vec<i64>,
    },
    /// Left out by the conservative strategy.
    LowConfidence {
        /// The pair it would have been.
        candidate: String,
        /// Why it was not confident enough.
        why: String,
    },
}

impl UnmatchedReason {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            UnmatchedReason::NoShapeCandidate => "no tensor of that shape on the other side".into(),
            UnmatchedReason::BelowThreshold {
                candidate,
                score,
                threshold,
            } => {
                format!("below threshold: best {candidate} scored {score:.3} < {threshold:.2}")
            }
            UnmatchedReason::LostTo {
                candidate,
                taken_by,
            } => format!("lost to a better candidate: {candidate} went to {taken_by}"),
            UnmatchedReason::Ambiguous { candidates } => {
                format!(
                    "ambiguous: look-alikes {} cannot be told apart by names, structure or order",
                    candidates.join(", ")
                )
            }
            UnmatchedReason::IncompatibleComponent => {
                "every candidate is in an incompatible component".into()
            }
            UnmatchedReason::MissingInCounterpart { counterpart } => {
                format!("its module matched {counterpart}, which has no such tensor")
            }
            UnmatchedReason::Converted { conversion } => conversion.describe(),
            UnmatchedReason::Tied { to } => format!("tied to {to} (same storage), which is mapped"),
            UnmatchedReason::NotInStateDict => {
                "computed by the model (a non-persistent buffer, not in the state dict)".into()
            }
            UnmatchedReason::Mismatched {
                shape, other_shape, ..
            } => {
                let dims = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                format!(
                    "MISMATCHED [{}] vs [{}] (same name on the other side, another shape)",
                    dims(shape),
                    dims(other_shape)
                )
            }
            UnmatchedReason::LowConfidence { candidate, why } => {
                format!("not confident enough for conservative: {candidate} ({why})")
            }
        }
    }
}

/// A tensor left unmatched, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmatched {
    /// The name (normalized).
    pub name: String,
    /// The name as written in its file.
    pub original_name: String,
    /// The shape.
    pub shape: Vec<i64>,
    /// Why.
    pub reason: UnmatchedReason,
}

/// What a report says about one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The file.
    pub path: String,
    /// Its format name.
    pub format: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Where its order came from.
    pub order: OrderKind,
    /// Wrapper prefixes stripped from its names.
    pub stripped_prefixes: Vec<String>,
}

/// The result of [`Mapper::suggest_mapping`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingResult {
    /// The source model.
    pub source: ModelSummary,
    /// The target model.
    pub target: ModelSummary,
    /// The strategy used.
    pub strategy: Strategy,
    /// The threshold in force.
    pub threshold: f64,
    /// The score weights used (normalized).
    pub weights: ScoreWeights,
    /// The one-to-one pairs, in source order.
    pub mappings: Vec<Match>,
    /// Source tensors left unmatched, with reasons, in source order.
    pub unmatched_source: Vec<Unmatched>,
    /// Target tensors left unmatched, with reasons, in target order.
    pub unmatched_target: Vec<Unmatched>,
    /// Conversions found: many-to-one and one-to-many ops (their tensors are also listed
    /// as unmatched, with the conversion as the reason).
    pub conversions: Vec<Conversion>,
    /// How the scored stage ran.
    #[serde(default)]
    pub scoring: ScoringSummary,
    /// The relative renamings repeated blocks follow (seen in two blocks or more): the
    /// evidence behind `block_rule` decisions, and what an export of rules builds on.
    #[serde(default)]
    pub block_rules: Vec<BlockRule>,
}

impl MappingResult {
    /// The mapping as a plain dict: {source name as in the source file: target name}.
    pub fn as_dict(&self) -> Map<String, Value> {
        self.mappings
            .iter()
            .map(|m| (m.source_original.clone(), Value::String(m.target.clone())))
            .collect()
    }

    /// The mapping with scores: {source name as in the file: score}.
    pub fn scores(&self) -> Map<String, Value> {
        self.mappings
            .iter()
            .map(|m| (m.source_original.clone(), json!(round4(m.score))))
            .collect()
    }

    /// The mapping `apply` executes: every pair (with its transform) and every conversion.
    pub fn to_mapping(&self) -> crate::mapping::Mapping {
        crate::mapping::Mapping {
            entries: self
                .mappings
                .iter()
                .map(|x| crate::mapping::MappingEntry {
                    source: x.source_original.clone(),
                    target: x.target.clone(),
                    transform: x.transform.clone(),
                })
                .collect(),
            conversions: self.conversions.clone(),
        }
    }

    /// The mapping file written by `map -o` (version 2, see [`crate::mapping`]).
    pub fn to_mapping_json(&self) -> Value {
        self.to_mapping().to_json()
    }

    /// Pairs and conversions that need a person's review ([`Match::needs_review`], and
    /// conversions flagged ambiguous).
    pub fn needs_review(&self) -> usize {
        self.mappings
            .iter()
            .filter(|m| m.needs_review().is_some())
            .count()
            + self
                .conversions
                .iter()
                .filter(|c| c.ambiguous.is_some())
                .count()
    }

    /// Tensors left unmatched for want of a counterpart, on either side: those taking part
    /// in a conversion, tied to a mapped tensor or outside the state dict are accounted for.
    pub fn unaccounted(&self) -> usize {
        self.unmatched_source
            .iter()
            .chain(&self.unmatched_target)
            .filter(|u| {
                !matches!(
                    u.reason,
                    UnmatchedReason::Converted { .. }
                        | UnmatchedReason::Tied { .. }
                        | UnmatchedReason::NotInStateDict
                )
            })
            .count()
    }

    /// What an execution order could settle here, in words (`3 pairs decided by file
    /// order, 2 look-alikes left ambiguous`); `None` when nothing: every pair was decided by
    /// other evidence, or by scores with a clear margin, and none was refused by the
    /// threshold. (A square weight's orientation is not something order settles.)
    pub fn order_could_settle(&self) -> Option<String> {
        let by_file_order = self
            .mappings
            .iter()
            .filter(|m| m.resolution == Resolution::FileOrder)
            .count();
        let close_scores = self
            .mappings
            .iter()
            .filter(|m| {
                m.resolution == Resolution::Score
                    && m.alternatives
                        .first()
                        .is_some_and(|r| r.score > m.score - REVIEW_MIN_MARGIN)
            })
            .count();
        let ambiguous = self
            .unmatched_source
            .iter()
            .filter(|u| matches!(u.reason, UnmatchedReason::Ambiguous { .. }))
            .count()
            + self
                .conversions
                .iter()
                .filter(|c| c.ambiguous.is_some())
                .count();
        // The order part of a score could lift a pair over the threshold.
        let below = self
            .unmatched_source
            .iter()
            .filter(|u| matches!(u.reason, UnmatchedReason::BelowThreshold { .. }))
            .count();
        let parts: Vec<String> = [
            (by_file_order, "pairs decided by file order"),
            (close_scores, "pairs decided by close scores"),
            (ambiguous, "look-alikes left ambiguous"),
            (below, "pairs scored under the threshold"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// What would settle the look-alikes left ambiguous, with the commands; `None` when
    /// none are.
    pub fn settle_hint(&self) -> Option<String> {
        let n = self
            .unmatched_source
            .iter()
            .filter(|u| matches!(u.reason, UnmatchedReason::Ambiguous { .. }))
            .count();
        if n == 0 {
            return None;
        }
        let trusted = |o: OrderKind| matches!(o, OrderKind::Dynamic | OrderKind::Static);
        let mut ways = vec![];
        for (side, model, flag) in [
            ("source", &self.source, "--source-order"),
            ("target", &self.target, "--target-order"),
        ] {
            if !trusted(model.order) && model.format == "torchscript" {
                ways.push(format!(
                    "the {side}'s execution order: {} is a TorchScript model, so `--order static` \
                     (or `--input SHAPE` for a traced order) gives it",
                    model.path
                ));
            } else if !trusted(model.order) {
                ways.push(format!(
                    "the {side}'s execution order: map from its TorchScript model instead of {}, \
                     or trace that model once (`weightmap trace MODEL.pt -o {side}_order.json`) \
                     and add `{flag} {side}_order.json`",
                    model.path
                ));
            }
        }
        if ways.is_empty() {
            ways.push(
                "a decision of yours: `--pin SOURCE=TARGET` for one of them (the rest is \
                 re-solved around it)"
                    .into(),
            );
        }
        Some(format!(
            "{n} source tensors are left ambiguous; what would settle them: {}",
            ways.join("; or ")
        ))
    }

    /// Share of target tensors that received a source tensor.
    pub fn coverage(&self) -> f64 {
        if self.target.tensors == 0 {
            0.0
        } else {
            self.mappings.len() as f64 / self.target.tensors as f64
        }
    }

    /// The JSON report: models, counts, coverage, every mapping with score, shapes,
    /// match type, transform and breakdown, every unmatched tensor with its reason, and
    /// the many-to-one relations.
    pub fn to_report_json(&self) -> Value {
        let mappings: Vec<Value> = self
            .mappings
            .iter()
            .map(|m| {
                json!({
                    "source": m.source_original,
                    "target": m.target,
                    "score": round4(m.score),
                    "source_shape": m.source_shape,
                    "target_shape": m.target_shape,
                    "match_type": m.match_type,
                    "transform": m.transform,
                    "resolution": m.resolution,
                    "resolution_detail": m.resolution_detail,
                    "confidence": round4(m.confidence),
                    "ambiguous": m.ambiguous,
                    "needs_review": m.needs_review(),
                    "breakdown": m.breakdown,
                    "alternatives": m.alternatives,
                })
            })
            .collect();
        let unmatched = |v: &[Unmatched]| -> Vec<Value> {
            v.iter()
                .map(|u| json!({"name": u.original_name, "shape": u.shape, "reason": u.reason, "message": u.reason.describe()}))
                .collect()
        };
        json!({
            "source": self.source,
            "target": self.target,
            "strategy": self.strategy,
            "threshold": self.threshold,
            "weights": self.weights,
            "counts": {
                "source_tensors": self.source.tensors,
                "target_tensors": self.target.tensors,
                "matched": self.mappings.len(),
                "unmatched_source": self.unmatched_source.len(),
                "unmatched_target": self.unmatched_target.len(),
                "transposed": self.mappings.iter().filter(|m| m.transform == Some(Transform::Transpose)).count(),
                "ambiguous": self.mappings.iter().filter(|m| m.ambiguous.is_some()).count(),
                "needs_review": self.needs_review(),
                "unaccounted": self.unaccounted(),
                "conversions": self.conversions.len(),
                "pinned": self.mappings.iter().filter(|m| m.resolution == Resolution::Pinned).count(),
            },
            "coverage": round4(self.coverage()),
            "mappings": mappings,
            "unmatched_source": unmatched(&self.unmatched_source),
            "unmatched_target": unmatched(&self.unmatched_target),
            "conversions": self.conversions,
            "scoring": self.scoring,
            "block_rules": self.block_rules,
            "settle_ambiguity": self.settle_hint(),
        })
    }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// One candidate target of a source tensor, with its full score breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The target name.
    pub target: String,
    /// The target shape.
    pub shape: Vec<i64>,
    /// The score and its parts.
    pub breakdown: ScoreBreakdown,
    /// The source tensor this target went to, if any.
    pub taken_by: Option<String>,
}

/// Everything known about one source tensor, for `explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The source tensor (normalized name).
    pub source: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Its match, if any.
    pub matched: Option<Match>,
    /// Why it is unmatched, if it is.
    pub unmatched: Option<UnmatchedReason>,
    /// Every candidate target with its score breakdown, best first.
    pub candidates: Vec<Candidate>,
}

/// Maps the tensors of a source model onto a target model.
#[derive(Debug, Clone)]
pub struct Mapper {
    source: ModelSpec,
    target: ModelSpec,
    options: MapperOptions,
}

impl Mapper {
    /// A mapper from two model specs (any source: a checkpoint's state dict, a model).
    pub fn new(
        mut source: ModelSpec,
        mut target: ModelSpec,
        options: MapperOptions,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&options.shape_tolerance) || !options.shape_tolerance.is_finite() {
            return Err(Error::InvalidArgument {
                what: "shape tolerance".into(),
                message: format!("{}: give a number between 0 and 1", options.shape_tolerance),
            });
        }
        for (a, b) in &options.incompatible {
            if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|c| c.trim().is_empty()) {
                return Err(Error::InvalidArgument {
                    what: "incompatible components".into(),
                    message: "each side needs at least one non-empty name chunk, e.g. 'backbone,encoder:head,classifier'".into(),
                });
            }
        }
        // A prefix stripped as a wrapper (`model.`) that the other model also uses is part of
        // both networks' names, not a wrapper: put it back so the names stay comparable.
        crate::normalize::restore_prefixes_used_by(&mut source, &target);
        crate::normalize::restore_prefixes_used_by(&mut target, &source);
        // Names of pins and forbids are checked before any work is done.
        options
            .constraints
            .resolve(&source, &target, options.shape_tolerance > 0.0)?;
        Ok(Mapper {
            source,
            target,
            options,
        })
    }

    /// The source model spec.
    pub fn source(&self) -> &ModelSpec {
        &self.source
    }

    /// The target model spec.
    pub fn target(&self) -> &ModelSpec {
        &self.target
    }

    /// The options.
    pub fn options(&self) -> &MapperOptions {
        &self.options
    }

    /// Gives the engine other execution orders (an order traced only once a first mapping
    /// showed it was needed).
    pub fn set_orders(&mut self, source: Option<TensorOrder>, target: Option<TensorOrder>) {
        self.options.source_order = source;
        self.options.target_order = target;
    }

    /// Works out the mapping.
    pub fn suggest_mapping(&self, opts: &SuggestOptions) -> Result<MappingResult> {
        opts.validate()?;
        Ok(finish::run(self, opts)?.0)
    }

    /// Scores one source tensor against every candidate target, with full breakdowns,
    /// in the context of the mapping `opts` produces.
    pub fn explain(&self, source: &str, opts: &SuggestOptions) -> Result<Explanation> {
        opts.validate()?;
        let i = self
            .source
            .find(source)
            .or_else(|| {
                self.source
                    .tensors
                    .iter()
                    .position(|t| t.original_name == source)
            })
            .ok_or_else(|| Error::MissingKey {
                context: self.source.path.clone(),
                key: source.to_string(),
                hint: String::new(),
            })?;
        let (result, state) = finish::run(self, opts)?;
        Ok(state.explain(self, &result, i, opts))
    }
}

impl From<&crate::trace::ExecutionOrder> for TensorOrder {
    /// The order a trace found: dynamic and static orders are trusted as execution order;
    /// tensors the model never used (and tied aliases) get no rank.
    fn from(o: &crate::trace::ExecutionOrder) -> Self {
        let kind = match o.mode {
            crate::trace::OrderMode::Dynamic => OrderKind::Dynamic,
            crate::trace::OrderMode::Static => OrderKind::Static,
            crate::trace::OrderMode::Registration => OrderKind::Registration,
        };
        TensorOrder {
            kind,
            names: o.order.iter().map(|e| e.name.clone()).collect(),
        }
    }
}

/// Parses `--incompatible 'backbone,encoder:head,classifier'` (pairs separated by `;`).
pub fn parse_incompatible(s: &str) -> Result<Vec<(Vec<String>, Vec<String>)>> {
    let mut out = vec![];
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once(':').ok_or_else(|| Error::InvalidArgument {
            what: "--incompatible".into(),
            message: format!("'{part}': expected SOURCE_CHUNKS:TARGET_CHUNKS, e.g. 'backbone,encoder:head,classifier'"),
        })?;
        let list = |x: &str| {
            x.split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        };
        let (la, lb) = (list(a), list(b));
        if la.is_empty() || lb.is_empty() {
            return Err(Error::InvalidArgument {
                what: "--incompatible".into(),
                message: format!("'{part}': both sides need at least one name chunk"),
            });
        }
        out.push((la, lb));
    }
    Ok(out)
}
