//! Evidence that tells same-shape look-alikes apart where their names do not:
//!
//! - **Ordinal families.** Siblings named by rank (`a`/`b`/`c`, `conv1`/`conv2`/`conv3`,
//!   `norm_a`/`norm_b`) align rank for rank once other evidence fixes the family: when the
//!   family's matched members all map into one family of the other side, at one offset of
//!   rank, an unmatched member goes to the member of the same rank there.
//! - **Siblings anchored in execution order.** A look-alike belongs next to the counterpart
//!   of its matched sibling in the source's module tree (the norm beside an output
//!   projection, the batch norm beside its conv): under one hypothesis for the whole class
//!   (each look-alike runs right after its anchor, or each runs right before it), every
//!   anchored look-alike must find its own candidate in the target's execution order;
//!   when exactly one hypothesis places them all, one to one, it decides. This needs an
//!   order on the target side only.
//!
//! Both decide only what they place without contradiction; the rest is left to order
//! evidence (and, failing that, stays unmatched with its reason).

use super::side::{component_index, Item, SideModel};
use crate::score::{tokenize, Token};
use std::collections::{HashMap, HashSet};

/// Pairs decided in a class: (source index, target index, why).
pub(crate) type Decided = Vec<(usize, usize, String)>;

/// Pairs known so far: those of earlier levels and classes, and those decided in this class.
pub(crate) struct Known<'a> {
    /// Source item → target item, from earlier decisions.
    pub earlier: &'a HashMap<Item, Item>,
    /// Decided in the class being resolved.
    pub here: HashMap<Item, Item>,
}

impl Known<'_> {
    fn get(&self, x: &Item) -> Option<Item> {
        self.here.get(x).or_else(|| self.earlier.get(x)).copied()
    }
}

/// The family of an item: its rank and the members (siblings with the same stem and kind
/// of index in their last name component) in index order; `None` for fewer than two.
fn family_of(side: &SideModel, item: Item) -> Option<(usize, Vec<Item>)> {
    let parent = side.item_parent(item)?;
    let (stem, _, kind) = component_index(side.components(item).last()?)?;
    let mut members: Vec<(u64, Item)> = side
        .children_items(parent)
        .into_iter()
        .filter_map(|c| {
            let (st, idx, k) = component_index(side.components(c).last()?)?;
            (st == stem && k == kind).then_some((idx, c))
        })
        .collect();
    members.sort_by_key(|m| m.0);
    if members.len() < 2 || members.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let rank = members.iter().position(|m| m.1 == item)?;
    Some((rank, members.into_iter().map(|m| m.1).collect()))
}

fn last_name<'a>(side: &'a SideModel, item: Item) -> &'a str {
    side.components(item)
        .last()
        .map(String::as_str)
        .unwrap_or("")
}

/// Look-alikes placed by their ordinal family.
pub(crate) fn by_family(
    s: &SideModel,
    t: &SideModel,
    known: &Known,
    rs: &[Item],
    rt: &[Item],
    allowed: &dyn Fn(Item, Item) -> bool,
) -> Decided {
    let col: HashMap<Item, usize> = rt.iter().enumerate().map(|(j, &y)| (y, j)).collect();
    let mut out: Decided = vec![];
    for (i, &x) in rs.iter().enumerate() {
        let Some((rank, members)) = family_of(s, x) else {
            continue;
        };
        let mut target_family: Option<Vec<Item>> = None;
        let mut offset: Option<isize> = None;
        let mut fixed = 0;
        let consistent = members.iter().enumerate().all(|(r, m)| {
            let Some(tm) = known.get(m) else {
                return true;
            };
            let Some((tr, tmembers)) = family_of(t, tm) else {
                return false;
            };
            let d = tr as isize - r as isize;
            let same_family = target_family.get_or_insert_with(|| tmembers.clone()) == &tmembers;
            fixed += 1;
            same_family && *offset.get_or_insert(d) == d
        });
        let (Some(family), Some(d)) = (target_family, offset) else {
            continue;
        };
        if !consistent || fixed == 0 {
            continue;
        }
        let Some(&y) = usize::try_from(rank as isize + d)
            .ok()
            .and_then(|k| family.get(k))
        else {
            continue;
        };
        let Some(&j) = col.get(&y) else { continue };
        if !allowed(x, y) {
            continue;
        }
        let names = |side: &SideModel, v: &[Item]| {
            v.iter()
                .map(|&m| last_name(side, m))
                .collect::<Vec<_>>()
                .join("/")
        };
        out.push((
            i,
            j,
            format!(
                "ordinal family: rank {} of {}, whose {fixed} matched member(s) map rank for rank onto {}",
                rank + 1,
                names(s, &members),
                names(t, &family)
            ),
        ));
    }
    without_collisions(out)
}

/// The matched siblings a look-alike is anchored to: those sharing a word of its name
/// (`a_bn` beside `a`, `attn_norm` beside `attn`), else every matched sibling.
fn anchors_of(s: &SideModel, known: &Known, x: Item) -> Vec<Item> {
    let Some(parent) = s.item_parent(x) else {
        return vec![];
    };
    let words = |it: Item| -> HashSet<String> {
        tokenize(last_name(s, it))
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w),
                Token::Num(_) => None,
            })
            .collect()
    };
    let own = words(x);
    let siblings: Vec<(Item, Item)> = s
        .children_items(parent)
        .into_iter()
        .filter(|&c| c != x)
        .filter_map(|c| known.get(&c).map(|t| (c, t)))
        .collect();
    let sharing: Vec<Item> = siblings
        .iter()
        .filter(|(c, _)| !words(*c).is_disjoint(&own))
        .map(|p| p.1)
        .collect();
    if sharing.is_empty() {
        siblings.into_iter().map(|p| p.1).collect()
    } else {
        sharing
    }
}

/// Look-alikes placed next to the counterparts of their matched siblings in the target's
/// execution order.
pub(crate) fn by_anchor(
    s: &SideModel,
    t: &SideModel,
    known: &Known,
    rs: &[Item],
    rt: &[Item],
    allowed: &dyn Fn(Item, Item) -> bool,
) -> Decided {
    let Some(spans) = rt
        .iter()
        .map(|&y| t.item_exec_span(y))
        .collect::<Option<Vec<_>>>()
    else {
        return vec![];
    };
    let anchors: Vec<Vec<Item>> = rs.iter().map(|&x| anchors_of(s, known, x)).collect();
    // The candidate right after (or right before) a target item in execution order.
    let next_to = |anchor: Item, after: bool| -> Option<usize> {
        let (lo, hi) = t.item_exec_span(anchor)?;
        if after {
            (0..rt.len())
                .filter(|&j| spans[j].0 > hi)
                .min_by_key(|&j| spans[j].0)
        } else {
            (0..rt.len())
                .filter(|&j| spans[j].1 < lo)
                .max_by_key(|&j| spans[j].1)
        }
    };
    let place = |after: bool| -> Option<Vec<Option<usize>>> {
        let mut choice = vec![None; rs.len()];
        for (i, a) in anchors.iter().enumerate() {
            let picks: Vec<Option<usize>> = a.iter().map(|&ta| next_to(ta, after)).collect();
            if picks.iter().any(Option::is_none) {
                // An anchored look-alike with nothing on that side: not this hypothesis.
                return None;
            }
            let distinct: HashSet<usize> = picks.iter().flatten().copied().collect();
            if distinct.len() == 1 {
                choice[i] = distinct.into_iter().next();
            }
        }
        let mut seen = HashSet::new();
        let one_to_one = choice.iter().flatten().all(|j| seen.insert(*j));
        (one_to_one && !seen.is_empty()).then_some(choice)
    };
    let (choice, after) = match (place(true), place(false)) {
        (Some(a), None) => (a, true),
        (None, Some(b)) => (b, false),
        (Some(a), Some(b)) if a == b => (a, true),
        _ => return vec![],
    };
    let out: Decided = choice
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|j| (i, j)))
        .filter(|&(i, j)| allowed(rs[i], rt[j]))
        .map(|(i, j)| {
            let anchor = anchors[i]
                .iter()
                .map(|&a| t.item_path(a))
                .collect::<Vec<_>>()
                .join(", ");
            (
                i,
                j,
                format!(
                    "sibling anchor: its matched sibling maps to {anchor}, which the target runs right {} it; every look-alike of the class is placed so, one to one",
                    if after { "before" } else { "after" }
                ),
            )
        })
        .collect();
    without_collisions(out)
}

/// Drops decisions that give one target to two sources.
pub(crate) fn without_collisions(out: Decided) -> Decided {
    let mut count: HashMap<usize, usize> = HashMap::new();
    for d in &out {
        *count.entry(d.1).or_default() += 1;
    }
    out.into_iter().filter(|d| count[&d.1] == 1).collect()
}
