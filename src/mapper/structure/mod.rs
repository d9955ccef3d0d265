//! Structural matching, top-down.
//!
//! A *level* is a pair of pools of items (module subtrees and units) known to
//! correspond as a whole, starting with the two roots' children. In each level:
//! 1. items with equal signatures (exact shapes, then shapes up to a 2-D transpose) are
//!    paired; a class of several look-alikes is split by names (relative to the level),
//!    then by order (execution order, indices in names, file order), else left open;
//! 2. failing that, modules with clearly similar content are paired (multiset Dice of
//!    unit signatures, only when no child fits better and what is left over on either
//!    side has no better place in the pool);
//! 3. failing that, the largest unpaired module is opened up (its children join the
//!    pool): this absorbs wrappers and nesting that exist on one side only;
//! 4. when only units remain, fused units (`qkv`) against separate ones (`q`, `k`, `v`)
//!    are recognized and taken out.
//!
//! Paired modules become new levels. Units left over go to the scored assignment.

use super::relations::{split_of, Found};
use super::renaming::{relative, BlockKey, RuleBook};

mod lookalikes;
use super::side::{Item, SideModel, Strength};
use super::Resolution;
use crate::assign::{assign, Edge};
use crate::mapping::{Conversion, ConversionKind};
use crate::score::{local_name_similarity, Token};
use std::collections::{HashMap, HashSet};

/// Margin by which a look-alike's name must beat every other candidate of its row and
/// column for names to decide (else order decides).
pub(crate) const NAME_MARGIN: f64 = 0.1;
/// Largest look-alike class (source × target items) whose names are compared pairwise.
const MAX_NAME_CLASS_CELLS: usize = 250_000;
/// Lowest content similarity (Dice over unit signatures) for pairing unequal modules.
pub(crate) const APPROX_MIN_DICE: f64 = 0.6;
/// Largest number of module pairs compared for similar-content pairing in one pool.
const APPROX_MAX_PAIRS: usize = 4_096;

/// Incompatible component pairs as a predicate on names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Incompat {
    pairs: Vec<(Vec<String>, Vec<String>)>,
}

impl Incompat {
    pub fn new(pairs: &[(Vec<String>, Vec<String>)]) -> Self {
        let low = |v: &Vec<String>| v.iter().map(|c| c.trim().to_ascii_lowercase()).collect();
        Incompat {
            pairs: pairs.iter().map(|(a, b)| (low(a), low(b))).collect(),
        }
    }

    /// Whether no pair is incompatible.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn has(name: &str, chunks: &[String]) -> bool {
        let lower = name.to_ascii_lowercase();
        lower.split('.').any(|c| {
            chunks.iter().any(|k| {
                c == k || c.strip_suffix('s') == Some(k.as_str()) || c.split('_').any(|p| p == k)
            })
        })
    }

    /// Whether source `s` may not map to target `t`.
    pub fn forbidden(&self, s: &str, t: &str) -> bool {
        self.pairs.iter().any(|(a, b)| {
            (Self::has(s, a) && Self::has(t, b)) || (Self::has(s, b) && Self::has(t, a))
        })
    }
}

/// A pair of units found structurally.
#[derive(Debug, Clone)]
pub(crate) struct UnitPair {
    pub s: usize,
    pub t: usize,
    pub resolution: Resolution,
    pub detail: String,
}

/// What structural matching found.
#[derive(Debug, Default)]
pub(crate) struct Structure {
    pub unit_pairs: Vec<UnitPair>,
    /// Source node → target node.
    pub node_pairs: HashMap<usize, usize>,
    /// How each node pair was decided.
    pub node_detail: HashMap<usize, (Resolution, String)>,
    /// Units left for the scored assignment.
    pub left_s: Vec<usize>,
    pub left_t: Vec<usize>,
    /// Splits and concatenations found inside levels.
    pub relations: Vec<Found>,
    /// The renamings repeated blocks followed ([`super::renaming`]).
    pub book: RuleBook,
    /// Items left undecided, or decided by file order only, with their level's block key
    /// and path inside it: a second pass with the complete book may settle them.
    pub missed: Vec<(BlockKey, String)>,
}

impl Structure {
    /// Whether the rules found by the end of this pass would decide something it missed.
    pub fn rules_would_help(&self) -> bool {
        self.missed
            .iter()
            .any(|(key, path)| self.book.lookup(key, path).is_some())
    }
}

struct Pair {
    s: Item,
    t: Item,
    resolution: Resolution,
    detail: String,
}

struct Level {
    s_items: Vec<Item>,
    t_items: Vec<Item>,
    s_root: String,
    t_root: String,
    /// Both roots are modules (not a module against a unit).
    modules: bool,
}

pub(crate) struct Matcher<'a, 'b> {
    s: &'a SideModel<'b>,
    t: &'a SideModel<'b>,
    use_names: bool,
    incompat: &'a Incompat,
    out: Structure,
    /// Pairs found so far in the current level (source item → target item).
    level_pairs: HashMap<Item, Item>,
    /// Pairs found so far in every level (the anchors of sibling evidence).
    matched: HashMap<Item, Item>,
    /// The renamings of a previous pass, complete (see [`Structure::rules_would_help`]).
    prior: Option<&'a RuleBook>,
    /// Classes of the current level that could not be resolved, as (signature, sizes,
    /// loose, min order, pairs known then): not retried until something changes.
    failed: HashSet<ClassKey>,
}

/// Identifies an attempt at resolving a class (see `Matcher::failed`).
type ClassKey = (u64, usize, usize, bool, Strength, usize);

fn dice(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    if a.is_empty() && b.is_empty() {
        1.0
    } else {
        2.0 * common as f64 / (a.len() + b.len()) as f64
    }
}

/// Multiset difference a − b of sorted vectors.
fn minus(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j, mut out) = (0, 0, vec![]);
    while i < a.len() {
        if j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && b[j] < a[i] {
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out
}

/// Whether `x` is left in the sorted multiset `all` once the sorted sub-multiset `alike`
/// is taken out of it: the same as `minus(all, alike).contains(&x)`, without building
/// the difference (the pools of a large model's root hold ~100k signatures).
fn has_other(all: &[u64], alike: &[u64], x: u64) -> bool {
    let count = |v: &[u64]| v.partition_point(|&y| y <= x) - v.partition_point(|&y| y < x);
    count(all) > count(alike)
}

fn resolution_of(strength: Strength) -> Resolution {
    match strength {
        Strength::Execution => Resolution::ExecutionOrder,
        Strength::Names => Resolution::NameIndices,
        Strength::Weak => Resolution::FileOrder,
    }
}

fn order_words(strength: Strength) -> &'static str {
    match strength {
        Strength::Execution => "execution order",
        Strength::Names => "the indices in their names",
        Strength::Weak => "file/registration order",
    }
}

impl<'a, 'b> Matcher<'a, 'b> {
    pub fn new(
        s: &'a SideModel<'b>,
        t: &'a SideModel<'b>,
        use_names: bool,
        incompat: &'a Incompat,
        prior: Option<&'a RuleBook>,
    ) -> Self {
        Matcher {
            prior,
            s,
            t,
            use_names,
            incompat,
            out: Structure::default(),
            level_pairs: HashMap::new(),
            matched: HashMap::new(),
            failed: HashSet::new(),
        }
    }

    /// Runs structural matching from the roots.
    pub fn run(mut self) -> Structure {
        self.out.node_pairs.insert(0, 0);
        let mut work = vec![Level {
            s_items: self.s.children_items(0),
            t_items: self.t.children_items(0),
            s_root: String::new(),
            t_root: String::new(),
            modules: true,
        }];
        // Module levels matched so far; each pairs a different source module or unit, so
        // their number is the total's upper bound.
        let progress = crate::progress::Progress::new(
            (self.s.nodes.len() + self.s.units.len()) as u64,
            "structure",
        );
        while let Some(level) = work.pop() {
            progress.inc(1);
            let pairs = self.match_level(level);
            for p in pairs.into_iter().rev() {
                match (p.s, p.t) {
                    (Item::Unit(a), Item::Unit(b)) => self.out.unit_pairs.push(UnitPair {
                        s: a,
                        t: b,
                        resolution: p.resolution,
                        detail: p.detail,
                    }),
                    (Item::Node(a), Item::Node(b)) => {
                        self.out.node_pairs.insert(a, b);
                        self.out.node_detail.insert(a, (p.resolution, p.detail));
                        work.push(Level {
                            s_items: self.s.children_items(a),
                            t_items: self.t.children_items(b),
                            s_root: self.s.nodes[a].path.clone(),
                            t_root: self.t.nodes[b].path.clone(),
                            modules: true,
                        });
                    }
                    (Item::Node(a), Item::Unit(b)) => work.push(Level {
                        s_items: self.s.children_items(a),
                        t_items: vec![Item::Unit(b)],
                        s_root: self.s.nodes[a].path.clone(),
                        t_root: self.t.units[b].label.clone(),
                        modules: false,
                    }),
                    (Item::Unit(a), Item::Node(b)) => work.push(Level {
                        s_items: vec![Item::Unit(a)],
                        t_items: self.t.children_items(b),
                        s_root: self.s.units[a].label.clone(),
                        t_root: self.t.nodes[b].path.clone(),
                        modules: false,
                    }),
                }
            }
        }
        progress.finish();
        self.out
    }

    fn match_level(&mut self, level: Level) -> Vec<Pair> {
        let Level {
            s_items: mut ps,
            t_items: mut pt,
            s_root,
            t_root,
            modules,
        } = level;
        let roots = (s_root.as_str(), t_root.as_str());
        let mut pairs: Vec<Pair> = vec![];
        self.level_pairs.clear();
        self.failed.clear();
        // Pairs only grow: each round records the new ones (all of them each round is
        // quadratic on levels with tens of thousands of items).
        let mut recorded = 0;
        loop {
            for p in &pairs[recorded..] {
                self.level_pairs.insert(p.s, p.t);
                self.matched.insert(p.s, p.t);
            }
            recorded = pairs.len();
            if ps.is_empty() || pt.is_empty() {
                break;
            }
            // Strong evidence first: look-alikes that only file order tells apart wait
            // until everything else in the level that can be paired is (their relational
            // anchors, for one).
            let mut progress = false;
            for loose in [false, true] {
                let found =
                    self.pair_classes(&mut ps, &mut pt, loose, false, Strength::Names, roots);
                progress |= !found.is_empty();
                pairs.extend(found);
            }
            if progress {
                continue;
            }
            let found = self.approx_pairs(&mut ps, &mut pt, roots);
            if !found.is_empty() {
                pairs.extend(found);
                continue;
            }
            for loose in [false, true] {
                let found =
                    self.pair_classes(&mut ps, &mut pt, loose, false, Strength::Weak, roots);
                progress |= !found.is_empty();
                pairs.extend(found);
            }
            if progress {
                continue;
            }
            if self.expand_largest(&mut ps, &mut pt) {
                continue;
            }
            if self.detect_splits(&mut ps, &mut pt) {
                continue;
            }
            // Classes of unequal size: only names can decide.
            for loose in [false, true] {
                let found = self.pair_classes(&mut ps, &mut pt, loose, true, Strength::Weak, roots);
                pairs.extend(found);
            }
            break;
        }
        for p in &pairs[recorded..] {
            self.matched.insert(p.s, p.t);
        }
        if modules {
            let key = RuleBook::key(&s_root, &t_root);
            for p in &pairs {
                let (rs, rt) = (
                    relative(self.s.item_path(p.s), &s_root),
                    relative(self.t.item_path(p.t), &t_root),
                );
                match p.resolution {
                    Resolution::FileOrder => self.out.missed.push((key.clone(), rs.to_string())),
                    Resolution::Similarity | Resolution::Score | Resolution::Pinned => {}
                    _ => self.out.book.record(&key, rs, rt),
                }
            }
            for &it in &ps {
                let rs = relative(self.s.item_path(it), &s_root);
                self.out.missed.push((key.clone(), rs.to_string()));
            }
        }
        // Whatever is left goes to the scored assignment, as units.
        for (pool, side, left) in [
            (&ps, self.s, &mut self.out.left_s),
            (&pt, self.t, &mut self.out.left_t),
        ] {
            let mut stack: Vec<Item> = pool.clone();
            while let Some(it) = stack.pop() {
                match it {
                    Item::Unit(u) => left.push(u),
                    Item::Node(x) => stack.extend(side.children_items(x)),
                }
            }
        }
        pairs
    }

    fn allowed(&self, a: Item, b: Item) -> bool {
        !self
            .incompat
            .forbidden(self.s.item_path(a), self.t.item_path(b))
    }

    /// Pairs items of equal signature; with `allow_unequal`, classes of unequal size too
    /// (names only).
    fn pair_classes(
        &mut self,
        ps: &mut Vec<Item>,
        pt: &mut Vec<Item>,
        loose: bool,
        allow_unequal: bool,
        min_order: Strength,
        roots: (&str, &str),
    ) -> Vec<Pair> {
        let group = |side: &SideModel, pool: &[Item]| {
            let mut keys: Vec<u64> = vec![];
            let mut map: HashMap<u64, Vec<Item>> = HashMap::new();
            for &it in pool {
                let h = side.item_hash(it, loose);
                map.entry(h)
                    .or_insert_with(|| {
                        keys.push(h);
                        vec![]
                    })
                    .push(it);
            }
            (keys, map)
        };
        let (keys, gs) = group(self.s, ps);
        let (_, gt) = group(self.t, pt);
        // Unit signatures inside modules of the pools not yet opened: a unit class is not
        // "the only one" while a look-alike may still come out of one of them.
        let hidden = |side: &SideModel, pool: &[Item]| -> HashSet<u64> {
            pool.iter()
                .filter_map(|i| match i {
                    Item::Node(x) => Some(if loose {
                        &side.nodes[*x].loose
                    } else {
                        &side.nodes[*x].exact
                    }),
                    Item::Unit(_) => None,
                })
                .flatten()
                .copied()
                .collect()
        };
        // Only pools holding both modules and units can hide a unit's look-alike.
        let any = |node: bool| {
            ps.iter()
                .chain(pt.iter())
                .any(|i| matches!(i, Item::Node(_)) == node)
        };
        let (hidden_s, hidden_t) = if any(true) && any(false) {
            (hidden(self.s, ps), hidden(self.t, pt))
        } else {
            (HashSet::new(), HashSet::new())
        };
        let unit_sig = |side: &SideModel, it: Item| match it {
            Item::Unit(u) => Some(if loose {
                side.units[u].loose
            } else {
                side.units[u].exact
            }),
            Item::Node(_) => None,
        };
        let mut out = vec![];
        for k in keys {
            let (Some(a), Some(b)) = (gs.get(&k), gt.get(&k)) else {
                continue;
            };
            if a.len() != b.len() && !allow_unequal {
                continue;
            }
            if let Some(sig) = unit_sig(self.s, a[0]) {
                if hidden_s.contains(&sig) || hidden_t.contains(&sig) {
                    continue;
                }
            }
            let key: ClassKey = (
                k,
                a.len(),
                b.len(),
                loose,
                min_order,
                self.level_pairs.len(),
            );
            if self.failed.contains(&key) {
                continue;
            }
            let found = self.resolve_class(a, b, roots, a.len() == b.len(), min_order);
            if found.is_empty() {
                self.failed.insert(key);
            }
            out.extend(found);
        }
        let used_s: HashSet<Item> = out.iter().map(|p| p.s).collect();
        let used_t: HashSet<Item> = out.iter().map(|p| p.t).collect();
        ps.retain(|i| !used_s.contains(i));
        pt.retain(|i| !used_t.contains(i));
        out
    }

    /// Pairs a class of look-alikes: unique, else by names, else by order.
    /// Order evidence weaker than `min_order` is not used (the class waits).
    fn resolve_class(
        &self,
        a: &[Item],
        b: &[Item],
        roots: (&str, &str),
        equal: bool,
        min_order: Strength,
    ) -> Vec<Pair> {
        if a.len() == 1 && b.len() == 1 {
            return if self.allowed(a[0], b[0]) {
                vec![Pair {
                    s: a[0],
                    t: b[0],
                    resolution: Resolution::Unique,
                    detail: "the only one with this signature".into(),
                }]
            } else {
                vec![]
            };
        }
        let n_class = a.len().max(b.len());
        let mut rs: Vec<Item> = a.to_vec();
        let mut rt: Vec<Item> = b.to_vec();
        let mut out = vec![];
        // Names are compared pairwise: very large classes go to order directly.
        if self.use_names && rs.len() * rt.len() <= MAX_NAME_CLASS_CELLS {
            // Names compare by their sets of words alone (local_name_similarity): look-alikes
            // share few distinct sets (`experts.17` and `experts.42` both are {expert}), so
            // each pair of distinct sets is scored once.
            let mut ids: HashMap<Vec<Token>, usize> = HashMap::new();
            let mut intern = |side: &SideModel, it: Item, root: &str| {
                let mut words: Vec<Token> = side
                    .relative_tokens(it, root)
                    .into_iter()
                    .filter(|t| matches!(t, Token::Word(_)))
                    .collect();
                words.sort();
                words.dedup();
                let next = ids.len();
                *ids.entry(words).or_insert(next)
            };
            let mut ts: Vec<usize> = rs.iter().map(|&i| intern(self.s, i, roots.0)).collect();
            let mut tt: Vec<usize> = rt.iter().map(|&i| intern(self.t, i, roots.1)).collect();
            let mut sets: Vec<Vec<Token>> = vec![vec![]; ids.len()];
            for (w, k) in ids {
                sets[k] = w;
            }
            let n_sets = sets.len();
            let mut sim: Vec<Option<f64>> = vec![None; n_sets * n_sets];
            // Every pair alike and allowed: every assignment ties with a runner-up (the
            // class holds more than one pair), so names cannot decide.
            let uniform = ts.iter().chain(&tt).all(|&k| k == ts[0]) && self.incompat.is_empty();
            loop {
                if uniform {
                    break;
                }
                let mut edges = vec![];
                for (i, x) in rs.iter().enumerate() {
                    for (j, y) in rt.iter().enumerate() {
                        if self.allowed(*x, *y) {
                            let cell = &mut sim[ts[i] * n_sets + tt[j]];
                            let score = *cell.get_or_insert_with(|| {
                                local_name_similarity(&sets[ts[i]], &sets[tt[j]])
                            });
                            edges.push(Edge {
                                row: i,
                                col: j,
                                score,
                            });
                        }
                    }
                }
                let accepted: Vec<(usize, usize)> = assign(rs.len(), &edges)
                    .into_iter()
                    .filter(|x| x.score > 0.0 && x.margin >= NAME_MARGIN)
                    .map(|x| (x.row, x.col))
                    .collect();
                if accepted.is_empty() {
                    break;
                }
                let (ri, ci): (HashSet<usize>, HashSet<usize>) = (
                    accepted.iter().map(|x| x.0).collect(),
                    accepted.iter().map(|x| x.1).collect(),
                );
                for &(i, j) in &accepted {
                    out.push(Pair {
                        s: rs[i],
                        t: rt[j],
                        resolution: Resolution::Names,
                        detail: format!("told apart from {n_class} look-alikes by name"),
                    });
                }
                let keep = |v: &mut Vec<Item>, idx: &HashSet<usize>| {
                    let mut k = 0;
                    v.retain(|_| {
                        k += 1;
                        !idx.contains(&(k - 1))
                    })
                };
                keep(&mut rs, &ri);
                keep(&mut rt, &ci);
                let mut k = 0;
                ts.retain(|_| {
                    k += 1;
                    !ri.contains(&(k - 1))
                });
                let mut k = 0;
                tt.retain(|_| {
                    k += 1;
                    !ci.contains(&(k - 1))
                });
                if rs.is_empty() || rt.is_empty() {
                    break;
                }
            }
        }
        if self.use_names && !rs.is_empty() && !rt.is_empty() {
            for (i, j, why) in self.relational(&rs, &rt) {
                out.push(Pair {
                    s: rs[i],
                    t: rt[j],
                    resolution: Resolution::Relation,
                    detail: why,
                });
            }
            let (used_s, used_t): (HashSet<Item>, HashSet<Item>) = (
                out.iter().map(|p| p.s).collect(),
                out.iter().map(|p| p.t).collect(),
            );
            rs.retain(|x| !used_s.contains(x));
            rt.retain(|x| !used_t.contains(x));
            self.by_evidence(&mut rs, &mut rt, &mut out, roots);
        }
        if !equal || rs.is_empty() || rs.len() != rt.len() {
            return out;
        }
        if rs.len() == 1 && !out.is_empty() {
            if self.allowed(rs[0], rt[0]) {
                out.push(Pair {
                    s: rs[0],
                    t: rt[0],
                    resolution: Resolution::Elimination,
                    detail: format!(
                        "the last of {n_class} look-alikes once the others were told apart"
                    ),
                });
            }
            return out;
        }
        if let (Some((ro, so)), Some((rto, sto))) =
            (self.s.class_order(&rs), self.t.class_order(&rt))
        {
            let strength = so.min(sto);
            if strength < min_order {
                return out;
            }
            // File order may break a tie only where it agrees with the other side's
            // registration order: against an execution order that registration order does
            // not follow, two libraries' registration habits would decide.
            let disagrees = |side: &SideModel, items: &[Item], ranks: &[usize]| {
                side.registration_order(items).as_deref() != Some(ranks)
            };
            if (so == Strength::Weak && sto == Strength::Execution && disagrees(self.t, &rt, &rto))
                || (sto == Strength::Weak
                    && so == Strength::Execution
                    && disagrees(self.s, &rs, &ro))
            {
                return out;
            }
            let mut by_rank_t = vec![0; rt.len()];
            for (j, &r) in rto.iter().enumerate() {
                by_rank_t[r] = j;
            }
            // File order never overrides the renaming other blocks follow.
            if strength == Strength::Weak
                && ro.iter().enumerate().any(|(i, &r)| {
                    self.rule_for(rs[i], roots).is_some_and(|(t, _)| {
                        t != relative(self.t.item_path(rt[by_rank_t[r]]), roots.1)
                    })
                })
            {
                return out;
            }
            for (i, &r) in ro.iter().enumerate() {
                let j = by_rank_t[r];
                if self.allowed(rs[i], rt[j]) {
                    out.push(Pair {
                        s: rs[i],
                        t: rt[j],
                        resolution: resolution_of(strength),
                        detail: format!(
                            "{} of {} look-alikes, chosen by {} (source: {}, target: {})",
                            r + 1,
                            rs.len(),
                            order_words(strength),
                            order_words(so),
                            order_words(sto)
                        ),
                    });
                }
            }
        }
        out
    }

    /// Pairs modules with clearly similar but unequal content.
    fn approx_pairs(
        &self,
        ps: &mut Vec<Item>,
        pt: &mut Vec<Item>,
        roots: (&str, &str),
    ) -> Vec<Pair> {
        let ms: Vec<Item> = ps
            .iter()
            .copied()
            .filter(|i| matches!(i, Item::Node(_)))
            .collect();
        let mt: Vec<Item> = pt
            .iter()
            .copied()
            .filter(|i| matches!(i, Item::Node(_)))
            .collect();
        if ms.is_empty() || mt.is_empty() || ms.len() * mt.len() > APPROX_MAX_PAIRS {
            return vec![];
        }
        let pool_sig = |side: &SideModel, pool: &[Item]| {
            let mut v: Vec<u64> = pool.iter().flat_map(|&i| side.item_sig(i)).collect();
            v.sort_unstable();
            v
        };
        let all_s = pool_sig(self.s, ps);
        let all_t = pool_sig(self.t, pt);
        // Per loose signature: the union of all pool items with that signature.
        let alike = |side: &SideModel, pool: &[Item]| {
            let mut m: HashMap<u64, Vec<u64>> = HashMap::new();
            for &i in pool {
                m.entry(side.item_hash(i, true))
                    .or_default()
                    .extend(side.item_sig(i));
            }
            m.values_mut().for_each(|v| v.sort_unstable());
            m
        };
        let alike_s = alike(self.s, ps);
        let alike_t = alike(self.t, pt);
        let child_sigs = |side: &SideModel, it: Item| -> Vec<Vec<u64>> {
            match it {
                Item::Node(x) => side
                    .children_items(x)
                    .into_iter()
                    .map(|c| side.item_sig(c))
                    .collect(),
                Item::Unit(_) => vec![],
            }
        };
        // Per target module, once: its signatures and its children's.
        let tb: Vec<(Vec<u64>, Vec<Vec<u64>>)> = mt
            .iter()
            .map(|&b| (self.t.item_sig(b), child_sigs(self.t, b)))
            .collect();
        let mut valid: Vec<(Item, Item, f64)> = vec![];
        for &a in &ms {
            let sa = self.s.item_sig(a);
            let ca = child_sigs(self.s, a);
            let alike_a = &alike_s[&self.s.item_hash(a, true)];
            for (&b, (sb, cb)) in mt.iter().zip(&tb) {
                let d = dice(&sa, sb);
                if d < APPROX_MIN_DICE {
                    continue;
                }
                if cb.iter().any(|c| dice(&sa, c) > d) || ca.iter().any(|c| dice(c, sb) > d) {
                    continue;
                }
                // Other items of the pools, look-alikes of `a` and `b` excluded (repeated
                // blocks all hold the same kinds of units): does what is left of `a` (of
                // `b`) have a place among the other side's others?
                let alike_b = &alike_t[&self.t.item_hash(b, true)];
                if minus(&sa, sb)
                    .iter()
                    .any(|&x| has_other(&all_t, alike_b, x))
                    || minus(sb, &sa)
                        .iter()
                        .any(|&x| has_other(&all_s, alike_a, x))
                {
                    continue;
                }
                valid.push((a, b, d));
            }
        }
        let Some(dmax) = valid.iter().map(|v| v.2).reduce(f64::max) else {
            return vec![];
        };
        let mut sa: Vec<Item> = vec![];
        let mut sb: Vec<Item> = vec![];
        for v in valid.iter().filter(|v| (v.2 - dmax).abs() < 1e-12) {
            if !sa.contains(&v.0) {
                sa.push(v.0);
            }
            if !sb.contains(&v.1) {
                sb.push(v.1);
            }
        }
        let mut out = self.resolve_class(&sa, &sb, roots, sa.len() == sb.len(), Strength::Weak);
        for p in out.iter_mut() {
            if p.resolution == Resolution::Unique {
                p.resolution = Resolution::Similarity;
                p.detail = format!("similar content (Dice {dmax:.2} over module signatures)");
            } else {
                p.detail = format!("{}; similar content (Dice {dmax:.2})", p.detail);
            }
        }
        let used_s: HashSet<Item> = out.iter().map(|p| p.s).collect();
        let used_t: HashSet<Item> = out.iter().map(|p| p.t).collect();
        ps.retain(|i| !used_s.contains(i));
        pt.retain(|i| !used_t.contains(i));
        out
    }

    /// Opens up the largest unpaired module of either pool.
    /// When one pool holds no module at all, the other's modules can only meet units:
    /// they are all opened at once.
    fn expand_largest(&self, ps: &mut Vec<Item>, pt: &mut Vec<Item>) -> bool {
        let has_node = |pool: &[Item]| pool.iter().any(|i| matches!(i, Item::Node(_)));
        let flatten = |pool: &mut Vec<Item>, side: &SideModel| {
            let mut out = Vec::with_capacity(pool.len());
            let mut stack: Vec<Item> = pool.iter().rev().copied().collect();
            while let Some(it) = stack.pop() {
                match it {
                    Item::Node(x) => stack.extend(side.children_items(x).into_iter().rev()),
                    u => out.push(u),
                }
            }
            *pool = out;
        };
        match (has_node(ps), has_node(pt)) {
            (true, false) => {
                flatten(ps, self.s);
                return true;
            }
            (false, true) => {
                flatten(pt, self.t);
                return true;
            }
            _ => {}
        }
        let mut best: Option<(bool, usize, usize)> = None; // (is_source, index, size)
        for (is_source, pool, side) in [(true, &*ps, self.s), (false, &*pt, self.t)] {
            for (k, &it) in pool.iter().enumerate() {
                if let Item::Node(_) = it {
                    let size = side.item_size(it);
                    if best.is_none_or(|b| size > b.2) {
                        best = Some((is_source, k, size));
                    }
                }
            }
        }
        let Some((is_source, k, _)) = best else {
            return false;
        };
        let (pool, side) = if is_source {
            (ps, self.s)
        } else {
            (pt, self.t)
        };
        let Item::Node(x) = pool[k] else { return false };
        let kids = side.children_items(x);
        pool.splice(k..=k, kids);
        true
    }

    /// Finds fused units against separate ones among the units of a level.
    fn detect_splits(&mut self, ps: &mut Vec<Item>, pt: &mut Vec<Item>) -> bool {
        let units = |pool: &[Item]| -> Vec<usize> {
            pool.iter()
                .filter_map(|i| {
                    if let Item::Unit(u) = i {
                        Some(*u)
                    } else {
                        None
                    }
                })
                .collect()
        };
        let (su, tu) = (units(ps), units(pt));
        let loose_s: HashSet<u64> = su.iter().map(|&u| self.s.units[u].loose).collect();
        let loose_t: HashSet<u64> = tu.iter().map(|&u| self.t.units[u].loose).collect();
        let mut consumed_s: HashSet<usize> = HashSet::new();
        let mut consumed_t: HashSet<usize> = HashSet::new();
        // First a source unit split into target units (Split), then a target unit made of
        // source units (Concat): the same search with the sides swapped.
        for split in [true, false] {
            let (one, many) = if split {
                (self.s, self.t)
            } else {
                (self.t, self.s)
            };
            let (ones, manys) = if split { (&su, &tu) } else { (&tu, &su) };
            let loose_many = if split { &loose_t } else { &loose_s };
            for &u in ones {
                let (consumed_one, consumed_many) = if split {
                    (&consumed_s, &consumed_t)
                } else {
                    (&consumed_t, &consumed_s)
                };
                if loose_many.contains(&one.units[u].loose) || consumed_one.contains(&u) {
                    continue;
                }
                let cands: Vec<usize> = manys
                    .iter()
                    .copied()
                    .filter(|c| !consumed_many.contains(c))
                    .collect();
                let Some((members, axes, evidence)) = split_of(one, u, many, &cands) else {
                    continue;
                };
                if members.iter().any(|&m| {
                    let (a, b) = (&one.units[u].label, &many.units[m].label);
                    let (source_label, target_label) = if split { (a, b) } else { (b, a) };
                    self.incompat.forbidden(source_label, target_label)
                }) {
                    continue;
                }
                for (role, axis) in axes {
                    let Some(&(_, oi)) = one.units[u].tensors.iter().find(|(r, _)| *r == role)
                    else {
                        continue;
                    };
                    let mis: Vec<usize> = members
                        .iter()
                        .filter_map(|&m| {
                            many.units[m]
                                .tensors
                                .iter()
                                .find(|(r, _)| *r == role)
                                .map(|x| x.1)
                        })
                        .collect();
                    let names = |side: &SideModel, ix: &[usize]| -> Vec<String> {
                        ix.iter()
                            .map(|&i| side.spec.tensors[i].original_name.clone())
                            .collect()
                    };
                    let (n1, nm) = (names(one, &[oi]), names(many, &mis));
                    let sizes: Vec<i64> = mis
                        .iter()
                        .map(|&i| many.spec.tensors[i].shape[axis])
                        .collect();
                    let (kind, sources, targets, source_tensors, target_tensors) = if split {
                        (ConversionKind::Split, n1, nm, vec![oi], mis)
                    } else {
                        (ConversionKind::Concat, nm, n1, mis, vec![oi])
                    };
                    let mut c = Conversion::new(kind, sources, targets, axis);
                    c.sizes = Some(sizes);
                    self.out.relations.push(Found {
                        relation: evidence.clone().apply(c),
                        source_tensors,
                        target_tensors,
                    });
                }
                if split {
                    consumed_s.insert(u);
                    consumed_t.extend(members);
                } else {
                    consumed_t.insert(u);
                    consumed_s.extend(members);
                }
            }
        }
        if consumed_s.is_empty() && consumed_t.is_empty() {
            return false;
        }
        ps.retain(|i| !matches!(i, Item::Unit(u) if consumed_s.contains(u)));
        pt.retain(|i| !matches!(i, Item::Unit(u) if consumed_t.contains(u)));
        true
    }
}

#[cfg(test)]
mod tests;
