//! The counts every view of a mapping shows (the terminal summary, the HTML page's
//! statistics and filters), from one definition, so that they agree by construction.

use crate::mapper::{MappingResult, MatchType};
use crate::report::terminal::transform_mark;
use serde::Serialize;

/// How many mappings and tensors fall in each category of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SummaryCounts {
    /// Mappings (one-to-one pairs).
    pub matched: usize,
    /// Source tensors without a one-to-one pair (conversions' sources included).
    pub unmatched_source: usize,
    /// Target tensors without a one-to-one pair (conversions' targets included).
    pub unmatched_target: usize,
    /// Mappings marked `exact` (same layout, not ambiguous).
    pub exact: usize,
    /// Mappings marked `transpose` (not ambiguous).
    pub transpose: usize,
    /// Mappings marked `reshape` (not ambiguous).
    pub reshape: usize,
    /// Mappings marked `ambiguous` (whatever their transform: the user must check them).
    pub ambiguous: usize,
    /// Mappings and conversions that need review ([`MappingResult::needs_review`]: the
    /// one definition every report uses).
    pub needs_review: usize,
    /// Mappings decided as a group of look-alikes.
    pub groups: usize,
}

/// The counts of `result`. Marks partition the mappings: `exact + transpose + reshape +
/// ambiguous == matched`.
pub fn summary_counts(result: &MappingResult) -> SummaryCounts {
    let mark = |name: &str| {
        result
            .mappings
            .iter()
            .filter(|m| transform_mark(m) == name)
            .count()
    };
    SummaryCounts {
        matched: result.mappings.len(),
        unmatched_source: result.unmatched_source.len(),
        unmatched_target: result.unmatched_target.len(),
        exact: mark("exact"),
        transpose: mark("transpose"),
        reshape: mark("reshape"),
        ambiguous: mark("ambiguous"),
        needs_review: result.needs_review(),
        groups: result
            .mappings
            .iter()
            .filter(|m| m.match_type == MatchType::Group)
            .count(),
    }
}
