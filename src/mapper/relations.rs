//! Many-to-one relations that a one-to-one mapping cannot express.
//!
//! - **Stacks** (found before structural matching, among *orphans*: tensors with no
//!   same-shape counterpart anywhere): a 3-D `[E, a, b]` tensor on one side against a
//!   family of `E` indexed tensors `experts.{0..E-1}.w2` of shape `[a, b]` on the other
//!   (stack), or against `g` such families whose shapes concatenate to `[a, b]` (stack of
//!   concat, e.g. `gate_up_proj` = per expert `cat(w1, w3)`).
//! - **Splits** (found inside matched modules, see `structure`): one unit (`attn.qkv`)
//!   against sibling units (`q_proj`, `k_proj`, `v_proj`) whose sizes along one axis add
//!   up to it. Members are chosen by name when the one tensor's name spells them
//!   (`q`, `k`, `v` in `qkv`), else all siblings must add up.

use super::side::SideModel;
use crate::mapping::{Conversion, ConversionKind};
use crate::score::{loose_shape, roles_compatible, tokenize, Role, Token};
use std::collections::{HashMap, HashSet};

/// A relation with the tensor indices it involves on each side.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub relation: Conversion,
    pub source_tensors: Vec<usize>,
    pub target_tensors: Vec<usize>,
}

/// Tensors of `a` with no tensor of `b` of a compatible role and the same loose shape.
pub(crate) fn orphans(a: &SideModel, b: &SideModel, allow_reshape: bool) -> Vec<bool> {
    let squeeze = |s: &[i64]| -> Vec<i64> { s.iter().copied().filter(|&d| d != 1).collect() };
    let mut by_shape: HashMap<Vec<i64>, Vec<Role>> = HashMap::new();
    let mut by_squeezed: HashMap<Vec<i64>, Vec<Role>> = HashMap::new();
    for (j, f) in b.feats.iter().enumerate() {
        if !b.active[j] {
            continue;
        }
        by_shape
            .entry(loose_shape(&f.shape))
            .or_default()
            .push(f.role);
        if allow_reshape {
            by_squeezed
                .entry(squeeze(&f.shape))
                .or_default()
                .push(f.role);
        }
    }
    a.feats
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if !a.active[i] {
                return false;
            }
            let hit = |m: &HashMap<Vec<i64>, Vec<Role>>, k: Vec<i64>| {
                m.get(&k)
                    .is_some_and(|rs| rs.iter().any(|&r| roles_compatible(f.role, r)))
            };
            !(hit(&by_shape, loose_shape(&f.shape))
                || (allow_reshape && hit(&by_squeezed, squeeze(&f.shape))))
        })
        .collect()
}

/// A family of indexed tensors: one name with one numeric component replaced by `*`.
#[derive(Clone)]
struct Family {
    /// The name with `*`.
    text: String,
    /// The part before `*` (the container).
    container: String,
    /// Tokens of the part after `*`.
    suffix_tokens: Vec<Token>,
    /// (index, tensor), sorted by index.
    members: Vec<(u64, usize)>,
    shape: Vec<i64>,
    role: Role,
}

/// A family being collected: (container, suffix, members as (index, tensor)).
type FamilyDraft = (String, String, Vec<(u64, usize)>);

/// Confidence of a conversion whose parts' order the names spell (`qkv` → q, k, v).
const CONFIDENCE_NAMED: f64 = 0.95;
/// Confidence of a stack of indexed tensors (`experts.{i}`): the indices give the order.
const CONFIDENCE_INDEXED: f64 = 0.9;
/// Confidence of a conversion whose parts' order the names do not settle (flagged).
const CONFIDENCE_UNSETTLED: f64 = 0.5;

/// Why the parts of a conversion are in their order, and how sure that is.
#[derive(Debug, Clone)]
pub(crate) struct OrderEvidence {
    pub reason: String,
    pub confidence: f64,
    /// Set when names do not settle the order: what to check.
    pub ambiguous: Option<String>,
}

impl OrderEvidence {
    fn named(reason: String) -> Self {
        OrderEvidence {
            reason,
            confidence: CONFIDENCE_NAMED,
            ambiguous: None,
        }
    }

    fn unsettled(reason: String, check: String) -> Self {
        OrderEvidence {
            reason,
            confidence: CONFIDENCE_UNSETTLED,
            ambiguous: Some(check),
        }
    }

    /// Puts the evidence on `c`.
    pub fn apply(self, mut c: Conversion) -> Conversion {
        c.confidence = Some(self.confidence);
        c.reason = Some(self.reason);
        c.ambiguous = self.ambiguous;
        c
    }
}

/// A stack candidate: (container text for number agreement, member tensors in order,
/// group size, axis, sizes of a group's parts along it, evidence of the order in a group).
type StackCandidate = (
    String,
    Vec<usize>,
    Option<usize>,
    usize,
    Vec<i64>,
    Option<OrderEvidence>,
);

/// A split found: the member units in order, the split axis of each role, and why the
/// members are in that order.
pub(crate) type Split = (Vec<usize>, Vec<(Role, usize)>, OrderEvidence);

/// `a` before `b` with numbers compared as numbers (`w2` < `w10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = vec![];
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let o = match (x, y) {
            ((true, p), (true, q)) => p
                .parse::<u128>()
                .unwrap_or(0)
                .cmp(&q.parse::<u128>().unwrap_or(0)),
            _ => x.1.cmp(y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The parts' names after their index, for reasons: `w1.weight, w3.weight`.
fn part_names(parts: &[&Family]) -> String {
    parts
        .iter()
        .map(|f| f.text.rsplit_once("*.").map_or(f.text.as_str(), |x| x.1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The words that tell the parts apart, as names are compared (`w1` reads as `gate`).
fn telling_words(parts: &[&Family]) -> String {
    let sets: Vec<HashSet<Token>> = parts
        .iter()
        .map(|f| f.suffix_tokens.iter().cloned().collect())
        .collect();
    let common: HashSet<Token> = sets.iter().skip(1).fold(sets[0].clone(), |acc, s| {
        acc.intersection(s).cloned().collect()
    });
    parts
        .iter()
        .map(|f| {
            let d: Vec<String> = f
                .suffix_tokens
                .iter()
                .filter(|t| !common.contains(t))
                .map(|t| t.to_string())
                .collect();
            if d.is_empty() {
                f.text.clone()
            } else {
                d.join("_")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn families(side: &SideModel, orphan: &[bool]) -> Vec<Family> {
    let mut map: HashMap<String, FamilyDraft> = HashMap::new();
    let mut order: Vec<String> = vec![];
    for (i, t) in side.spec.tensors.iter().enumerate() {
        if !orphan[i] {
            continue;
        }
        let comps: Vec<&str> = t.name.split('.').collect();
        for (k, c) in comps.iter().enumerate() {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) || c.len() > 9 {
                continue;
            }
            let Ok(idx) = c.parse::<u64>() else { continue };
            let mut p = comps.clone();
            p[k] = "*";
            let text = p.join(".");
            let container = p[..=k].join(".");
            let suffix = p[k + 1..].join(".");
            let e = map.entry(text.clone()).or_insert_with(|| {
                order.push(text.clone());
                (container, suffix, vec![])
            });
            e.2.push((idx, i));
        }
    }
    let mut out = vec![];
    for text in order {
        let Some((container, suffix, mut members)) = map.remove(&text) else {
            continue;
        };
        members.sort_unstable();
        let distinct: HashSet<u64> = members.iter().map(|m| m.0).collect();
        if members.len() < 2 || distinct.len() != members.len() {
            continue;
        }
        let shape = side.feats[members[0].1].shape.clone();
        let role = side.feats[members[0].1].role;
        if members
            .iter()
            .any(|m| side.feats[m.1].shape != shape || side.feats[m.1].role != role)
        {
            continue;
        }
        out.push(Family {
            text,
            container,
            suffix_tokens: tokenize(&suffix),
            members,
            shape,
            role,
        });
    }
    out
}

fn numbers(text: &str) -> Vec<u64> {
    text.split('.')
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// Words of `tokens` not in `common`.
fn distinct_words(tokens: &[Token], common: &HashSet<Token>) -> Vec<Token> {
    tokens
        .iter()
        .filter(|t| matches!(t, Token::Word(_)) && !common.contains(t))
        .cloned()
        .collect()
}

/// Finds stacks: orphans of rank ≥ 3 on one side against families of orphans on the
/// other. `one_is_target` says which side holds the stacked tensor.
fn stacks_one_way(
    one: &SideModel,
    many: &SideModel,
    one_orphan: &[bool],
    many_orphan: &[bool],
    one_is_target: bool,
    used_many: &mut HashSet<usize>,
) -> Vec<Found> {
    let direct = families(many, many_orphan);
    // The same 2-D families seen transposed: experts stored `[E, in, out]` against
    // per-expert `nn.Linear` weights `[out, in]` (each part transposed on its way).
    let transposed: Vec<Family> = direct
        .iter()
        .filter(|f| f.shape.len() == 2 && f.shape[0] != f.shape[1])
        .map(|f| {
            let mut f = f.clone();
            f.shape.reverse();
            f
        })
        .collect();
    let mut out = vec![];
    for (x, t) in one.spec.tensors.iter().enumerate() {
        if !one_orphan[x] || t.shape.len() < 3 || t.shape[0] < 2 {
            continue;
        }
        let e = t.shape[0] as usize;
        let rest = &t.shape[1..];
        let role = one.feats[x].role;
        let x_tokens = &one.feats[x].tokens;
        let mut cands: Vec<StackCandidate> = vec![];
        let fits = |f: &Family| {
            f.members.len() == e
                && roles_compatible(f.role, role)
                && f.members.iter().all(|m| !used_many.contains(&m.1))
        };
        // Parts as they are first; transposed only when nothing fits as they are.
        let mut transpose = false;
        let mut chosen = None;
        for (pass, fams) in [(false, &direct), (true, &transposed)] {
            if chosen.is_some() {
                break;
            }
            cands.clear();
            transpose = pass;
            for f in fams.iter().filter(|f| fits(f) && f.shape == rest) {
                cands.push((
                    f.text.clone(),
                    f.members.iter().map(|m| m.1).collect(),
                    None,
                    0,
                    vec![],
                    None,
                ));
            }
            if cands.is_empty() {
                // Stack of concat: families of one container that add up along one axis.
                let mut by_container: HashMap<&str, Vec<&Family>> = HashMap::new();
                for f in fams
                    .iter()
                    .filter(|f| fits(f) && f.shape.len() == rest.len())
                {
                    by_container
                        .entry(f.container.as_str())
                        .or_default()
                        .push(f);
                }
                let mut containers: Vec<_> = by_container.into_iter().collect();
                containers.sort_by(|a, b| a.0.cmp(b.0));
                for (container, fs) in containers {
                    for ax in 0..rest.len() {
                        let parts: Vec<&&Family> = fs
                            .iter()
                            .filter(|f| {
                                f.shape[ax] < rest[ax]
                                    && (0..rest.len()).all(|d| d == ax || f.shape[d] == rest[d])
                            })
                            .collect();
                        if parts.len() < 2 {
                            continue;
                        }
                        let sets: Vec<HashSet<Token>> = parts
                            .iter()
                            .map(|f| f.suffix_tokens.iter().cloned().collect())
                            .collect();
                        let common: HashSet<Token> =
                            sets.iter().skip(1).fold(sets[0].clone(), |acc, s| {
                                acc.intersection(s).cloned().collect()
                            });
                        // Prefer the families whose distinguishing words the stacked name spells.
                        let named: Vec<(usize, &&Family)> = parts
                            .iter()
                            .filter_map(|f| {
                                let d = distinct_words(&f.suffix_tokens, &common);
                                let pos: Option<Vec<usize>> = d
                                    .iter()
                                    .map(|w| x_tokens.iter().position(|t| t == w))
                                    .collect();
                                match pos {
                                    Some(p) if !p.is_empty() => {
                                        Some((p.into_iter().min().unwrap_or(0), *f))
                                    }
                                    _ => None,
                                }
                            })
                            .collect();
                        let mut named_sorted = named.clone();
                        named_sorted.sort_by_key(|n| n.0);
                        let (choice, evidence): (Vec<&Family>, OrderEvidence) = {
                            let nf: Vec<&Family> = named_sorted.iter().map(|n| *n.1).collect();
                            if nf.len() >= 2
                                && nf.iter().map(|f| f.shape[ax]).sum::<i64>() == rest[ax]
                            {
                                let e = OrderEvidence::named(format!(
                                "per index, {} lie along dim {ax} in the order the name '{}' spells them ({})",
                                part_names(&nf),
                                t.original_name,
                                telling_words(&nf)
                            ));
                                (nf, e)
                            } else if parts.iter().map(|f| f.shape[ax]).sum::<i64>() == rest[ax] {
                                // Names do not say which part comes first: take them in the
                                // natural order of their names (numbers as numbers) and flag it.
                                let mut all: Vec<&Family> = parts.iter().map(|f| **f).collect();
                                all.sort_by(|a, b| natural_cmp(&a.text, &b.text));
                                let words = part_names(&all);
                                let e = OrderEvidence::unsettled(
                                format!(
                                    "per index, {words} add up to '{}' along dim {ax}; taken in the order of their names",
                                    t.original_name
                                ),
                                format!(
                                    "the name '{}' does not spell {words}: which part comes first along dim {ax} is not settled by names; check it (swap the parts of each group if the model says otherwise)",
                                    t.original_name
                                ),
                            );
                                (all, e)
                            } else {
                                continue;
                            }
                        };
                        let g = choice.len();
                        let mut members = vec![];
                        for k in 0..e {
                            for f in &choice {
                                members.push(f.members[k].1);
                            }
                        }
                        let sizes = choice.iter().map(|f| f.shape[ax]).collect();
                        cands.push((
                            container.to_string(),
                            members,
                            Some(g),
                            ax,
                            sizes,
                            Some(evidence),
                        ));
                    }
                }
            }
            chosen = if cands.len() == 1 {
                cands.pop()
            } else {
                let want = numbers(&t.name);
                let mut agree: Vec<_> = cands.drain(..).filter(|c| numbers(&c.0) == want).collect();
                if agree.len() == 1 {
                    agree.pop()
                } else {
                    None
                }
            };
        }
        let Some((family, members, group_size, axis, sizes, evidence)) = chosen else {
            continue;
        };
        used_many.extend(members.iter().copied());
        let one_name = vec![t.original_name.clone()];
        let many_names: Vec<String> = members
            .iter()
            .map(|&m| many.spec.tensors[m].original_name.clone())
            .collect();
        let n = members.len() / group_size.unwrap_or(1);
        let (sources, targets, st, tt) = if one_is_target {
            (many_names, one_name, members, vec![x])
        } else {
            (one_name, many_names, vec![x], members)
        };
        let kind = match (one_is_target, group_size) {
            (true, None) => ConversionKind::Stack,
            (false, None) => ConversionKind::Unstack,
            (true, Some(_)) => ConversionKind::StackOfConcat,
            (false, Some(_)) => ConversionKind::SplitOfUnstack,
        };
        let mut c = Conversion::new(kind, sources, targets, 0);
        c.transpose = transpose;
        if group_size.is_some() {
            c.group_size = group_size;
            c.concat_dim = Some(axis);
        }
        if kind == ConversionKind::SplitOfUnstack {
            c.sizes = Some(sizes);
        }
        let indexed = format!(
            "{n} indexed tensors '{family}'{} against '{}' of shape {:?}; ordered by their index",
            if transpose { ", each transposed," } else { "" },
            t.original_name,
            t.shape
        );
        let c = match evidence {
            None => OrderEvidence {
                reason: indexed,
                confidence: CONFIDENCE_INDEXED,
                ambiguous: None,
            }
            .apply(c),
            Some(mut e) => {
                e.reason = format!("{indexed}; {}", e.reason);
                e.apply(c)
            }
        };
        out.push(Found {
            relation: c,
            source_tensors: st,
            target_tensors: tt,
        });
    }
    out
}

/// Finds stacks in both directions among orphans.
pub(crate) fn detect_stacks(
    s: &SideModel,
    t: &SideModel,
    s_orphan: &[bool],
    t_orphan: &[bool],
) -> Vec<Found> {
    let mut used_s = HashSet::new();
    let mut used_t = HashSet::new();
    let mut out = stacks_one_way(t, s, t_orphan, s_orphan, true, &mut used_s);
    let s_left: Vec<bool> = s_orphan
        .iter()
        .enumerate()
        .map(|(i, &o)| o && !used_s.contains(&i))
        .collect();
    out.extend(stacks_one_way(s, t, &s_left, t_orphan, false, &mut used_t));
    out
}

/// Whether `member` differs from `one` along exactly one axis, with a smaller size there;
/// returns that axis.
fn split_axis(one: &[i64], member: &[i64]) -> Option<usize> {
    if one.len() != member.len() {
        return None;
    }
    let diff: Vec<usize> = (0..one.len()).filter(|&d| one[d] != member[d]).collect();
    (diff.len() == 1 && member[diff[0]] < one[diff[0]]).then(|| diff[0])
}

/// Looks for units of `many` (among `candidates`) that together make up unit `u` of
/// `one` along one axis per role. Returns the members in order and the axis of each of
/// `u`'s roles.
pub(crate) fn split_of(
    one: &SideModel,
    u: usize,
    many: &SideModel,
    candidates: &[usize],
) -> Option<Split> {
    let unit = &one.units[u];
    let roles: Vec<(Role, &[i64])> = unit
        .tensors
        .iter()
        .filter(|(r, _)| !r.optional())
        .map(|(r, i)| (*r, one.spec.tensors[*i].shape.as_slice()))
        .collect();
    if roles.is_empty() {
        return None;
    }
    // Candidates with the same roles, each differing along one axis per role.
    let mut ok: Vec<(usize, Vec<usize>)> = vec![];
    for &c in candidates {
        let cu = &many.units[c];
        let croles: Vec<(Role, usize)> = cu
            .tensors
            .iter()
            .filter(|(r, _)| !r.optional())
            .copied()
            .collect();
        if croles.len() != roles.len() {
            continue;
        }
        let mut axes = vec![];
        for (r, shape) in &roles {
            let Some((_, ti)) = croles.iter().find(|(cr, _)| cr == r) else {
                break;
            };
            match split_axis(shape, &many.spec.tensors[*ti].shape) {
                Some(a) => axes.push(a),
                None => break,
            }
        }
        if axes.len() == roles.len() {
            ok.push((c, axes));
        }
    }
    // Group by scope (the module holding the sibling units).
    let scope_of = |c: usize| {
        many.units[c]
            .label
            .rsplit_once('.')
            .map(|x| x.0.to_string())
            .unwrap_or_default()
    };
    let mut scopes: Vec<String> = vec![];
    let mut groups: HashMap<String, Vec<(usize, Vec<usize>)>> = HashMap::new();
    for x in ok {
        let s = scope_of(x.0);
        if !groups.contains_key(&s) {
            scopes.push(s.clone());
        }
        groups.entry(s).or_default().push(x);
    }
    let own = unit
        .label
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut results = vec![];
    for s in scopes {
        let g = &groups[&s];
        if g.len() < 2 {
            continue;
        }
        let toks: Vec<Vec<Token>> = g
            .iter()
            .map(|(c, _)| tokenize(many.units[*c].label.rsplit('.').next().unwrap_or("")))
            .collect();
        let sets: Vec<HashSet<Token>> = toks.iter().map(|t| t.iter().cloned().collect()).collect();
        let common: HashSet<Token> = sets.iter().skip(1).fold(sets[0].clone(), |acc, s| {
            acc.intersection(s).cloned().collect()
        });
        let named: Vec<usize> = (0..g.len())
            .filter(|&k| {
                let d = distinct_words(&toks[k], &common);
                !d.is_empty() && d.iter().all(|w| own.contains(&w.to_string()))
            })
            .collect();
        let all: Vec<usize> = (0..g.len()).collect();
        for subset in [named, all] {
            if subset.len() < 2 {
                continue;
            }
            // Every role must split along one axis and add up.
            let adds_up = (0..roles.len()).all(|r| {
                let ax = g[subset[0]].1[r];
                subset.iter().all(|&k| g[k].1[r] == ax) && {
                    let role = roles[r].0;
                    let sum: i64 = subset
                        .iter()
                        .map(|&k| {
                            let cu = &many.units[g[k].0];
                            cu.tensors
                                .iter()
                                .find(|(cr, _)| *cr == role)
                                .map(|(_, ti)| many.spec.tensors[*ti].shape[ax])
                                .unwrap_or(0)
                        })
                        .sum();
                    sum == roles[r].1[ax]
                }
            });
            if adds_up {
                let mut members: Vec<usize> = subset.iter().map(|&k| g[k].0).collect();
                // Order: as the one tensor's name spells them (q, k, v in `qkv`), else by
                // position, else by name.
                let spelled = |c: usize| -> Option<usize> {
                    let k = g.iter().position(|x| x.0 == c)?;
                    distinct_words(&toks[k], &common)
                        .iter()
                        .filter_map(|w| own.find(&w.to_string()))
                        .min()
                };
                let first_pos = |c: usize| {
                    many.units[c]
                        .tensors
                        .iter()
                        .filter_map(|(_, i)| many.pos[*i])
                        .reduce(f64::min)
                };
                let short = |c: usize| {
                    many.units[c]
                        .label
                        .rsplit('.')
                        .next()
                        .unwrap_or("")
                        .to_string()
                };
                let evidence = if members.iter().all(|&c| spelled(c).is_some()) {
                    members.sort_by_key(|&c| spelled(c));
                    let list: Vec<String> = members.iter().map(|&c| short(c)).collect();
                    OrderEvidence::named(format!(
                        "the name '{own}' spells its parts in the order {}",
                        list.join(", ")
                    ))
                } else {
                    let by = if members.iter().all(|&c| first_pos(c).is_some()) {
                        members.sort_by(|&a, &b| {
                            first_pos(a)
                                .unwrap_or(0.0)
                                .total_cmp(&first_pos(b).unwrap_or(0.0))
                        });
                        "the order the file lists them in"
                    } else {
                        members.sort_by(|&a, &b| {
                            natural_cmp(&many.units[a].label, &many.units[b].label)
                        });
                        "the order of their names"
                    };
                    let list: Vec<String> = members.iter().map(|&c| short(c)).collect();
                    OrderEvidence::unsettled(
                        format!(
                            "{} add up to '{own}' along one axis; taken in {by}",
                            list.join(", ")
                        ),
                        format!(
                            "the name '{own}' does not spell {}: their order inside it is not settled by names; check it",
                            list.join(", ")
                        ),
                    )
                };
                let axes: Vec<(Role, usize)> = roles
                    .iter()
                    .zip(&g[subset[0]].1)
                    .map(|((r, _), a)| (*r, *a))
                    .collect();
                results.push((s.clone(), (members, axes, evidence)));
                break;
            }
        }
    }
    if results.len() > 1 {
        // Several modules' units add up (levels flattened because the containers'
        // signatures differ): keep the one whose indices agree with the fused unit's
        // (`blocks.1.attn.qkv` takes `layers.1.attention.*`).
        let own_scope = unit.label.rsplit_once('.').map_or("", |x| x.0);
        let want = numbers(own_scope);
        results.retain(|(scope, _)| numbers(scope) == want);
    }
    if results.len() == 1 {
        results.pop().map(|r| r.1)
    } else {
        None
    }
}
