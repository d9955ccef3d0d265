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
use super::{ManyToOne, ManyToOneKind};
use crate::score::{loose_shape, roles_compatible, tokenize, Role, Token};
use std::collections::{HashMap, HashSet};

/// A relation with the tensor indices it involves on each side.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub relation: ManyToOne,
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

/// A stack candidate: (container text for number agreement, member tensors in order, kind,
/// group size, axis).
type StackCandidate = (String, Vec<usize>, ManyToOneKind, Option<usize>, usize);

/// A split found: the member units in order, and the split axis of each role.
pub(crate) type Split = (Vec<usize>, Vec<(Role, usize)>);

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
    let fams = families(many, many_orphan);
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
        for f in fams.iter().filter(|f| fits(f) && f.shape == rest) {
            let kind = if one_is_target {
                ManyToOneKind::Stack
            } else {
                ManyToOneKind::Unstack
            };
            cands.push((
                f.text.clone(),
                f.members.iter().map(|m| m.1).collect(),
                kind,
                None,
                0,
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
                    let choice: Vec<&Family> = {
                        let nf: Vec<&Family> = named_sorted.iter().map(|n| *n.1).collect();
                        if nf.len() >= 2 && nf.iter().map(|f| f.shape[ax]).sum::<i64>() == rest[ax]
                        {
                            nf
                        } else if parts.iter().map(|f| f.shape[ax]).sum::<i64>() == rest[ax] {
                            parts.iter().map(|f| **f).collect()
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
                    let kind = if one_is_target {
                        ManyToOneKind::StackOfConcat
                    } else {
                        ManyToOneKind::Unstack
                    };
                    cands.push((container.to_string(), members, kind, Some(g), ax));
                }
            }
        }
        let chosen = if cands.len() == 1 {
            cands.pop()
        } else {
            let want = numbers(&t.name);
            let mut agree: Vec<_> = cands
                .into_iter()
                .filter(|c| numbers(&c.0) == want)
                .collect();
            if agree.len() == 1 {
                agree.pop()
            } else {
                None
            }
        };
        let Some((_, members, kind, group_size, axis)) = chosen else {
            continue;
        };
        used_many.extend(members.iter().copied());
        let one_name = vec![t.original_name.clone()];
        let many_names: Vec<String> = members
            .iter()
            .map(|&m| many.spec.tensors[m].original_name.clone())
            .collect();
        let (sources, targets, st, tt) = if one_is_target {
            (many_names, one_name, members, vec![x])
        } else {
            (one_name, many_names, vec![x], members)
        };
        out.push(Found {
            relation: ManyToOne {
                kind,
                sources,
                targets,
                axis,
                group_size,
            },
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
                if members.iter().all(|&c| spelled(c).is_some()) {
                    members.sort_by_key(|&c| spelled(c));
                } else if members.iter().all(|&c| first_pos(c).is_some()) {
                    members.sort_by(|&a, &b| {
                        first_pos(a)
                            .unwrap_or(0.0)
                            .total_cmp(&first_pos(b).unwrap_or(0.0))
                    });
                } else {
                    members.sort_by(|&a, &b| many.units[a].label.cmp(&many.units[b].label));
                }
                let axes: Vec<(Role, usize)> = roles
                    .iter()
                    .zip(&g[subset[0]].1)
                    .map(|((r, _), a)| (*r, *a))
                    .collect();
                results.push((members, axes));
                break;
            }
        }
    }
    if results.len() == 1 {
        results.pop()
    } else {
        None
    }
}
