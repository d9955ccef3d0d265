//! Look-alikes of a class that names alone do not tell apart: names that place them
//! relative to a matched module, the renaming other repeated blocks follow, ordinal
//! families and siblings anchored in execution order.

use super::{Matcher, Pair};
use crate::mapper::evidence::{by_anchor, by_family, without_collisions, Known};
use crate::mapper::renaming::{relative, RuleBook};
use crate::mapper::side::Item;
use crate::mapper::Resolution;
use crate::score::{tokenize, Token, RELATIONAL_AFTER, RELATIONAL_BEFORE};
use std::collections::HashSet;

impl Matcher<'_, '_> {
    /// Ordinal families and siblings anchored in execution order ([`super::evidence`]),
    /// applied until they decide nothing more.
    pub(super) fn by_evidence(
        &self,
        rs: &mut Vec<Item>,
        rt: &mut Vec<Item>,
        out: &mut Vec<Pair>,
        roots: (&str, &str),
    ) {
        let mut known = Known {
            earlier: &self.matched,
            here: out.iter().map(|p| (p.s, p.t)).collect(),
        };
        let allowed = |a: Item, b: Item| self.allowed(a, b);
        loop {
            if rs.is_empty() || rt.is_empty() {
                return;
            }
            let mut found = self.by_rule(rs, rt, roots);
            let mut resolution = Resolution::BlockRule;
            if found.is_empty() {
                found = by_family(self.s, self.t, &known, rs, rt, &allowed);
                resolution = Resolution::OrdinalFamily;
            }
            if found.is_empty() {
                found = by_anchor(self.s, self.t, &known, rs, rt, &allowed);
                resolution = Resolution::SiblingAnchor;
            }
            if found.is_empty() {
                return;
            }
            let (mut used_s, mut used_t) = (HashSet::new(), HashSet::new());
            for (i, j, detail) in found {
                known.here.insert(rs[i], rt[j]);
                used_s.insert(rs[i]);
                used_t.insert(rt[j]);
                out.push(Pair {
                    s: rs[i],
                    t: rt[j],
                    resolution,
                    detail,
                });
            }
            rs.retain(|x| !used_s.contains(x));
            rt.retain(|x| !used_t.contains(x));
        }
    }

    /// The renaming other blocks like this level's follow for `x`: (target path inside
    /// the level's target root, support).
    pub(super) fn rule_for(&self, x: Item, roots: (&str, &str)) -> Option<(&str, usize)> {
        let key = RuleBook::key(roots.0, roots.1);
        let path = relative(self.s.item_path(x), roots.0);
        self.prior
            .and_then(|b| b.lookup(&key, path))
            .or_else(|| self.out.book.lookup(&key, path))
    }

    /// Look-alikes placed by the renaming other blocks follow.
    fn by_rule(
        &self,
        rs: &[Item],
        rt: &[Item],
        roots: (&str, &str),
    ) -> Vec<(usize, usize, String)> {
        let found: Vec<(usize, usize, String)> = rs
            .iter()
            .enumerate()
            .filter_map(|(i, &x)| {
                let (target, support) = self.rule_for(x, roots)?;
                let hits: Vec<usize> = (0..rt.len())
                    .filter(|&j| relative(self.t.item_path(rt[j]), roots.1) == target)
                    .collect();
                let [j] = hits[..] else { return None };
                self.allowed(x, rt[j]).then(|| {
                    (
                        i,
                        j,
                        format!(
                            "one renaming across repeated blocks: {} → {target}, as {support} other block(s) decided by other evidence",
                            relative(self.s.item_path(x), roots.0)
                        ),
                    )
                })
            })
            .collect();
        without_collisions(found)
    }

    /// Look-alikes whose name places them relative to a module of the level
    /// (`post_attention_layernorm`: after the attention module): the target counterpart
    /// must lie on that side of the anchor's counterpart in the target's execution order.
    /// Returns (source index, target index, detail) for look-alikes this decides alone.
    pub(super) fn relational(&self, rs: &[Item], rt: &[Item]) -> Vec<(usize, usize, String)> {
        let mut out = vec![];
        for (i, &x) in rs.iter().enumerate() {
            let last = self
                .s
                .components(x)
                .last()
                .map(|c| c.to_ascii_lowercase())
                .unwrap_or_default();
            let pieces: Vec<&str> = last.split('_').collect();
            let Some(k) = pieces
                .iter()
                .position(|p| RELATIONAL_AFTER.contains(p) || RELATIONAL_BEFORE.contains(p))
            else {
                continue;
            };
            let after = RELATIONAL_AFTER.contains(&pieces[k]);
            let Some(Token::Word(word)) = pieces
                .get(k + 1)
                .and_then(|w| tokenize(w).into_iter().next())
            else {
                continue;
            };
            // The anchor: the one paired item of this level whose own name has that word.
            let anchors: Vec<(&Item, &Item)> = self
                .level_pairs
                .iter()
                .filter(|(a, _)| {
                    self.s
                        .components(**a)
                        .last()
                        .is_some_and(|c| tokenize(c).contains(&Token::Word(word.clone())))
                })
                .collect();
            let [(anchor, partner)] = anchors[..] else {
                continue;
            };
            let Some(pe) = self.t.item_exec(*partner) else {
                continue;
            };
            let fits: Vec<usize> = (0..rt.len())
                .filter(|&j| {
                    self.t
                        .item_exec(rt[j])
                        .is_some_and(|e| if after { e > pe } else { e < pe })
                })
                .collect();
            if let [j] = fits[..] {
                if self.allowed(x, rt[j]) && !out.iter().any(|o: &(usize, usize, String)| o.1 == j)
                {
                    out.push((
                        i,
                        j,
                        format!(
                            "its name places it {} {}, whose counterpart {} it follows in execution order",
                            if after { "after" } else { "before" },
                            self.s.item_path(*anchor),
                            self.t.item_path(*partner)
                        ),
                    ));
                }
            }
        }
        out
    }
}
