//! `map --by-content`: equal content as the strongest evidence of a pair, before any name
//! or shape heuristic, when both models carry real values (two exports of the same
//! weights).
//!
//! Every tensor of both models is hashed once (in parallel, bounded chunks); a content
//! (dtype, shape, bytes) found exactly once on each side pairs its two tensors, confirmed
//! byte for byte. The mapping engine then maps the rest, unchanged: it runs on both models
//! without the tensors already paired. Content found more than once (zeros, ones, tied
//! copies) is left to the engine, and [`ContentMapping::notes`] says so.

use super::{hash_all, locate_values, unique_content_pairs, Side};
use crate::apply::data::TensorData;
use crate::error::Result;
use crate::mapper::{
    Mapper, MappingResult, Match, MatchType, Resolution, SuggestOptions, TensorOrder,
};
use crate::score::{ScoreBreakdown, ShapeRelation};
use crate::spec::ModelSpec;
use std::collections::HashSet;

/// A mapping whose first pairs come from equal content.
#[derive(Debug, Clone)]
pub struct ContentMapping {
    /// The whole mapping: the content pairs, then the engine's pairs of the rest.
    pub result: MappingResult,
    /// How many pairs equal content decided.
    pub by_content: usize,
    /// Content found more than once on a side, left to the engine.
    pub notes: Vec<String>,
}

/// Maps `mapper`'s source onto its target with content hashes first (see the module
/// docs), then the engine with `opts` for the rest.
///
/// Errors: a model has no values (a model spec JSON), or its data cannot be read.
pub fn suggest_by_content(mapper: &Mapper, opts: &SuggestOptions) -> Result<ContentMapping> {
    opts.validate()?;
    let (mut s, mut t) = (mapper.source().clone(), mapper.target().clone());
    locate_values(&mut s)?;
    locate_values(&mut t)?;
    let (ds, dt) = (TensorData::open(&s)?, TensorData::open(&t)?);
    let (all_s, all_t) = (vec![true; s.tensors.len()], vec![true; t.tensors.len()]);
    let (hs, ht) = (hash_all(&s, &ds, &all_s)?, hash_all(&t, &dt, &all_t)?);
    let (pairs, notes) = unique_content_pairs(
        &Side::new(&s, &ds, &hs, &all_s),
        &Side::new(&t, &dt, &ht, &all_t),
    )?;

    let content: Vec<Match> = pairs
        .iter()
        .map(|&(i, j)| content_match(&s.tensors[i], &t.tensors[j]))
        .collect();
    let paired_s: HashSet<&str> = pairs
        .iter()
        .map(|&(i, _)| s.tensors[i].name.as_str())
        .collect();
    let paired_t: HashSet<&str> = pairs
        .iter()
        .map(|&(_, j)| t.tensors[j].name.as_str())
        .collect();
    let rest = |spec: &ModelSpec, paired: &HashSet<&str>| {
        let mut r = spec.clone();
        r.tensors.retain(|x| !paired.contains(x.name.as_str()));
        r
    };
    let mut options = mapper.options().clone();
    let keep = |o: &mut Option<TensorOrder>, paired: &HashSet<&str>| {
        if let Some(o) = o {
            o.names.retain(|n| !paired.contains(n.as_str()));
        }
    };
    keep(&mut options.source_order, &paired_s);
    keep(&mut options.target_order, &paired_t);
    let engine = Mapper::new(rest(&s, &paired_s), rest(&t, &paired_t), options)?;
    let mut result = engine.suggest_mapping(opts)?;
    result.source.tensors = s.tensors.len();
    result.target.tensors = t.tensors.len();
    let by_content = content.len();
    result.mappings.splice(0..0, content);
    Ok(ContentMapping {
        result,
        by_content,
        notes,
    })
}

/// The pair of two tensors with equal content.
fn content_match(s: &crate::TensorInfo, t: &crate::TensorInfo) -> Match {
    Match {
        source: s.name.clone(),
        source_original: s.original_name.clone(),
        target: t.name.clone(),
        source_shape: s.shape.clone(),
        target_shape: t.shape.clone(),
        score: 1.0,
        // Content decided the pair, not the name or hierarchy scores: only the shape
        // part is known.
        breakdown: ScoreBreakdown::shape_only(ShapeRelation::Equal, 1.0),
        transform: None,
        match_type: MatchType::Individual,
        resolution: Resolution::Unique,
        resolution_detail:
            "equal content, found once on each side (xxh3 hash, confirmed byte for byte)".into(),
        confidence: 1.0,
        alternatives: vec![],
        ambiguous: None,
    }
}
