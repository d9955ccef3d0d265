//! One side of a mapping, prepared for matching: tensors grouped into units (a module's
//! weight, bias and buffers together), the module tree above them with subtree
//! signatures, and what is known about order.

use super::{OrderKind, TensorOrder};
use crate::score::{leaf_role, loose_shape, tokenize, Role, TensorFeatures, Token};
use crate::spec::{Format, ModelSpec};
use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The tensors of one module that map together (or a single bare parameter).
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// The tree node this unit belongs to (its module, or the parent of a bare parameter).
    pub node: usize,
    /// The module path (for `X_weight` leaves, the virtual sub-module `module.X`), or the
    /// tensor name for a bare parameter.
    pub label: String,
    /// (role, tensor index), in position order.
    pub tensors: Vec<(Role, usize)>,
    /// Signature with exact shapes.
    pub exact: u64,
    /// Signature with [`loose_shape`]s (equal for transposed counterparts).
    pub loose: u64,
    /// [`SideModel::item_hash`] of the unit (exact, loose): a one-element subtree.
    pub h_exact: u64,
    pub h_loose: u64,
}

/// A module of the tree (virtual sub-modules of `X_weight` leaves included).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Full module path; empty for the root.
    pub path: String,
    /// Parent node.
    pub parent: Option<usize>,
    /// Child nodes, in order of first appearance.
    pub children: Vec<usize>,
    /// Units directly in this node.
    pub units: Vec<usize>,
    /// Sorted multiset of the exact signatures of all units in the subtree.
    pub exact: Vec<u64>,
    /// Sorted multiset of the loose signatures of all units in the subtree.
    pub loose: Vec<u64>,
    /// Hash of `exact`.
    pub h_exact: u64,
    /// Hash of `loose`.
    pub h_loose: u64,
    /// Number of (active) tensors in the subtree.
    pub n_tensors: usize,
    /// Smallest weak position (file or registration order) in the subtree.
    pub pos_min: Option<f64>,
    /// Smallest execution rank in the subtree.
    pub exec_min: Option<usize>,
    /// Largest execution rank in the subtree.
    pub exec_max: Option<usize>,
    /// Smallest and largest structured rank in the subtree.
    pub rank_span: Option<(f64, f64)>,
}

/// An element of a matching pool: a whole module subtree or a single unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Item {
    /// A module subtree.
    Node(usize),
    /// A unit.
    Unit(usize),
}

/// How strongly an order is trusted, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Strength {
    /// File or registration order: usually, not always, execution order.
    Weak,
    /// Indices written in the names (`layer.3` < `layer.4`, `conv_a` < `conv_b`).
    Names,
    /// Execution order from a trace.
    Execution,
}

/// A prepared side.
pub(crate) struct SideModel<'a> {
    pub spec: &'a ModelSpec,
    pub feats: Vec<TensorFeatures>,
    /// Whether the tensor takes part in one-to-one matching.
    pub active: Vec<bool>,
    pub unit_of: Vec<Option<usize>>,
    pub units: Vec<Unit>,
    pub nodes: Vec<Node>,
    /// Weak position of each tensor (None when the file's order carries nothing).
    pub pos: Vec<Option<f64>>,
    /// Execution rank of each tensor, when an execution order was given.
    pub exec: Vec<Option<usize>>,
    /// Structured rank in `[0, 1]` of each tensor, when any order is known.
    pub rank: Vec<Option<f64>>,
    /// Where the order came from.
    pub order_kind: OrderKind,
    /// Cached path components of nodes and units, for index comparisons.
    node_components: Vec<Vec<String>>,
    unit_components: Vec<Vec<String>>,
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The default order of a spec: what its key order means.
pub(crate) fn default_order_kind(format: Format) -> OrderKind {
    match format {
        Format::TorchScript => OrderKind::Registration,
        Format::TorchZip | Format::TorchLegacy | Format::SpecJson => OrderKind::File,
        // A safetensors file's keys are sorted alphabetically: only numbers inside names
        // say anything about order.
        Format::Safetensors | Format::SafetensorsSharded => OrderKind::NamesOnly,
    }
}

/// Groups of words that say where a module comes in a sequence (`layernorm_before` /
/// `layernorm_after`, `pre_norm` / `post_norm`, `first_conv` / `second_conv`).
pub(crate) const ORDINAL_WORDS: &[&[&str]] = &[
    &["before", "after"],
    &["pre", "post"],
    &["first", "second", "third", "fourth"],
];

/// Kind of an index in a name: two indices compare only when their kinds agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IndexKind {
    /// Digits (`layer3`, `3`).
    Number,
    /// A letter `a`–`h` after `_` (`conv_a`).
    Letter,
    /// A word of [`ORDINAL_WORDS`] group `n`, before or after `_`.
    Word(usize),
}

/// An index written in a path component: `12`, `layer3`, `encoder_layer_0`, `conv_a`,
/// `layernorm_after`, `pre_norm`. Returns the stem (the rest of the component), the index
/// and its kind.
pub(crate) fn component_index(c: &str) -> Option<(&str, u64, IndexKind)> {
    let digits = c.bytes().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && digits <= 9 {
        let (stem, num) = c.split_at(c.len() - digits);
        return num.parse().ok().map(|n| (stem, n, IndexKind::Number));
    }
    let b = c.as_bytes();
    if b.len() >= 3 && b[b.len() - 2] == b'_' && (b'a'..=b'h').contains(&b[b.len() - 1]) {
        return Some((
            &c[..c.len() - 1],
            (b[b.len() - 1] - b'a') as u64,
            IndexKind::Letter,
        ));
    }
    // A letter on its own (`f.a`, `f.b`) or in front (`a_bn`, `b_bn`): a branch's steps.
    if (b.len() == 1 || (b.len() >= 3 && b[1] == b'_')) && (b'a'..=b'h').contains(&b[0]) {
        return Some((&c[1..], (b[0] - b'a') as u64, IndexKind::Letter));
    }
    for (g, words) in ORDINAL_WORDS.iter().enumerate() {
        for (k, w) in words.iter().enumerate() {
            let lower = c.to_ascii_lowercase();
            if lower.len() > w.len() + 1 {
                if lower.ends_with(w) && lower.as_bytes()[lower.len() - w.len() - 1] == b'_' {
                    return Some((&c[..c.len() - w.len()], k as u64, IndexKind::Word(g)));
                }
                if lower.starts_with(w) && lower.as_bytes()[w.len()] == b'_' {
                    return Some((&c[w.len()..], k as u64, IndexKind::Word(g)));
                }
            }
        }
    }
    None
}

/// Compares two paths by the indices in their names: at the first differing component,
/// both must be indices of one kind with the same stem (`layer3` vs `layer10`, `3` vs
/// `10`, `norm_a` vs `norm_b`, `ln_before` vs `ln_after`).
pub(crate) fn compare_by_names(a: &[String], b: &[String]) -> Option<Ordering> {
    let i = a.iter().zip(b).position(|(x, y)| x != y)?;
    let (sa, na, ka) = component_index(&a[i])?;
    let (sb, nb, kb) = component_index(&b[i])?;
    (sa == sb && ka == kb).then(|| na.cmp(&nb))
}

fn components(path: &str) -> Vec<String> {
    if path.is_empty() {
        vec![]
    } else {
        path.split('.').map(str::to_string).collect()
    }
}

impl<'a> SideModel<'a> {
    /// Prepares `spec`; tensors with `active[i] == false` (consumed by a many-to-one
    /// relation, or not in the state dict) are left out of units and signatures.
    pub fn new(spec: &'a ModelSpec, order: Option<&TensorOrder>, active: Vec<bool>) -> Self {
        let n = spec.tensors.len();
        let feats: Vec<TensorFeatures> = spec
            .tensors
            .iter()
            .map(|t| TensorFeatures::new(&t.name, &t.leaf, &t.shape, &t.dtype, t.depth))
            .collect();
        let default_kind = default_order_kind(spec.format);
        // The file's key order as weak positions; none for sorted safetensors keys.
        let file_positions = || -> Vec<Option<f64>> {
            if default_kind == OrderKind::NamesOnly {
                vec![None; n]
            } else {
                spec.tensors
                    .iter()
                    .map(|t| Some(t.position as f64))
                    .collect()
            }
        };
        let (order_kind, pos, exec) = match order {
            Some(o) => {
                let by_name: HashMap<&str, usize> = o
                    .names
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.as_str(), i))
                    .collect();
                let ranks: Vec<Option<usize>> = spec
                    .tensors
                    .iter()
                    .map(|t| {
                        by_name
                            .get(t.name.as_str())
                            .or_else(|| by_name.get(t.original_name.as_str()))
                            .copied()
                    })
                    .collect();
                match o.kind {
                    OrderKind::Dynamic | OrderKind::Static => (o.kind, file_positions(), ranks),
                    OrderKind::Registration | OrderKind::File => (
                        o.kind,
                        ranks.iter().map(|r| r.map(|x| x as f64)).collect(),
                        vec![None; n],
                    ),
                    OrderKind::NamesOnly | OrderKind::None => {
                        (o.kind, vec![None; n], vec![None; n])
                    }
                }
            }
            None => (default_kind, file_positions(), vec![None; n]),
        };

        // Units: a module's role tensors together; bare parameters alone.
        let mut units: Vec<Unit> = Vec::new();
        let mut unit_of = vec![None; n];
        let mut unit_by_label: HashMap<String, usize> = HashMap::new();
        let mut unit_paths: Vec<String> = Vec::new(); // module path each unit hangs under
        for (i, t) in spec.tensors.iter().enumerate() {
            if !active[i] {
                continue;
            }
            let (role, virtual_module) = leaf_role(&t.leaf);
            let (label, individual, module_path) = match (role, virtual_module) {
                (Role::Param, _) => (t.name.clone(), true, t.module.clone()),
                (_, Some(v)) => {
                    let m = if t.module.is_empty() {
                        v.to_string()
                    } else {
                        format!("{}.{v}", t.module)
                    };
                    (m.clone(), false, m)
                }
                (_, None) => (t.module.clone(), false, t.module.clone()),
            };
            // A module with two tensors of one role (unusual) gets a second unit.
            let key = if individual {
                format!("\u{0}{label}")
            } else {
                label.clone()
            };
            let u = match unit_by_label.get(&key) {
                Some(&u) if !units[u].tensors.iter().any(|(r, _)| *r == role) => u,
                _ => {
                    units.push(Unit {
                        node: 0,
                        label,
                        tensors: vec![],
                        exact: 0,
                        loose: 0,
                        h_exact: 0,
                        h_loose: 0,
                    });
                    unit_paths.push(module_path);
                    unit_by_label.insert(key, units.len() - 1);
                    units.len() - 1
                }
            };
            units[u].tensors.push((role, i));
            unit_of[i] = Some(u);
        }

        // Nodes from the units' module paths.
        let empty = |path: String, parent: Option<usize>| Node {
            path,
            parent,
            children: vec![],
            units: vec![],
            exact: vec![],
            loose: vec![],
            h_exact: 0,
            h_loose: 0,
            n_tensors: 0,
            pos_min: None,
            exec_min: None,
            exec_max: None,
            rank_span: None,
        };
        let mut nodes = vec![empty(String::new(), None)];
        let mut node_by_path: HashMap<String, usize> = HashMap::new();
        node_by_path.insert(String::new(), 0);
        for (u, mp) in unit_paths.iter().enumerate() {
            // The deepest ancestor (or the module itself) that exists already: usually
            // the module or its parent, found in one or two lookups instead of one per
            // level; the missing levels below it are created top-down as they appear.
            // (A path with a leading `.` builds its prefixes otherwise: from the root.)
            let mut known = if mp.starts_with('.') { 0 } else { mp.len() };
            let mut cur = loop {
                if let Some(&c) = node_by_path.get(&mp[..known]) {
                    break c;
                }
                known = mp[..known].rfind('.').unwrap_or(0);
            };
            if mp.starts_with('.') {
                let mut path = String::new();
                for part in mp.split('.') {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(part);
                    cur = match node_by_path.get(&path) {
                        Some(&c) => c,
                        None => {
                            nodes.push(empty(path.clone(), Some(cur)));
                            let c = nodes.len() - 1;
                            nodes[cur].children.push(c);
                            node_by_path.insert(path.clone(), c);
                            c
                        }
                    };
                }
            } else if known < mp.len() {
                let start = if known == 0 { 0 } else { known + 1 };
                for (off, _) in mp[start..]
                    .match_indices('.')
                    .map(|(k, x)| (start + k, x))
                    .chain(std::iter::once((mp.len(), "")))
                {
                    let path = &mp[..off];
                    nodes.push(empty(path.to_string(), Some(cur)));
                    let c = nodes.len() - 1;
                    nodes[cur].children.push(c);
                    node_by_path.insert(path.to_string(), c);
                    cur = c;
                }
            }
            units[u].node = cur;
            nodes[cur].units.push(u);
        }

        // Unit signatures: sorted (role, shape), optional roles left out unless alone. A bare
        // parameter counts as a weight (`score::roles_compatible`): a leaf renamed consistently
        // (`weight_scale_inv` beside `weight` → a second `scale` weight) keeps modules alike.
        for u in units.iter_mut() {
            let sig = |loose: bool| {
                let mut v: Vec<(Role, Vec<i64>)> = u
                    .tensors
                    .iter()
                    .filter(|(r, _)| !r.optional() || u.tensors.iter().all(|(r2, _)| r2.optional()))
                    .map(|(r, i)| {
                        (
                            if *r == Role::Param { Role::Weight } else { *r },
                            if loose {
                                loose_shape(&spec.tensors[*i].shape)
                            } else {
                                spec.tensors[*i].shape.clone()
                            },
                        )
                    })
                    .collect();
                v.sort();
                hash_of(&v)
            };
            u.exact = sig(false);
            u.loose = sig(true);
            u.h_exact = hash_of(&vec![u.exact]);
            u.h_loose = hash_of(&vec![u.loose]);
        }

        let mut side = SideModel {
            spec,
            feats,
            active,
            unit_of,
            units,
            nodes,
            pos,
            exec,
            rank: vec![None; n],
            order_kind,
            node_components: vec![],
            unit_components: vec![],
        };
        side.node_components = side.nodes.iter().map(|nd| components(&nd.path)).collect();
        side.unit_components = side.units.iter().map(|u| components(&u.label)).collect();
        side.compute_subtrees(0);
        side.compute_ranks();
        side
    }

    /// Fills signatures, counts and order keys of every node bottom-up.
    fn compute_subtrees(&mut self, root: usize) {
        // Post-order without recursion (deep trees are fine).
        let mut order = vec![];
        let mut stack = vec![root];
        while let Some(x) = stack.pop() {
            order.push(x);
            stack.extend(self.nodes[x].children.iter().copied());
        }
        for &x in order.iter().rev() {
            let mut exact = vec![];
            let mut loose = vec![];
            let mut n = 0;
            let mut pos_min: Option<f64> = None;
            let mut exec_min: Option<usize> = None;
            let mut exec_max: Option<usize> = None;
            for &u in &self.nodes[x].units {
                exact.push(self.units[u].exact);
                loose.push(self.units[u].loose);
                for &(_, i) in &self.units[u].tensors {
                    n += 1;
                    if let Some(p) = self.pos[i] {
                        pos_min = Some(pos_min.map_or(p, |m| m.min(p)));
                    }
                    if let Some(e) = self.exec[i] {
                        exec_min = Some(exec_min.map_or(e, |m| m.min(e)));
                        exec_max = Some(exec_max.map_or(e, |m| m.max(e)));
                    }
                }
            }
            for &c in &self.nodes[x].children {
                let cn = &self.nodes[c];
                exact.extend_from_slice(&cn.exact);
                loose.extend_from_slice(&cn.loose);
                n += cn.n_tensors;
                if let Some(p) = cn.pos_min {
                    pos_min = Some(pos_min.map_or(p, |m| m.min(p)));
                }
                if let Some(e) = cn.exec_min {
                    exec_min = Some(exec_min.map_or(e, |m| m.min(e)));
                }
                if let Some(e) = cn.exec_max {
                    exec_max = Some(exec_max.map_or(e, |m| m.max(e)));
                }
            }
            exact.sort_unstable();
            loose.sort_unstable();
            let nd = &mut self.nodes[x];
            nd.h_exact = hash_of(&exact);
            nd.h_loose = hash_of(&loose);
            nd.exact = exact;
            nd.loose = loose;
            nd.n_tensors = n;
            nd.pos_min = pos_min;
            nd.exec_min = exec_min;
            nd.exec_max = exec_max;
        }
    }

    /// Structured order: a walk of the module tree, siblings by execution order when
    /// known, else by position, with families of indexed siblings (`conv1`/`conv2`,
    /// `norm_a`/`norm_b`) put in index order among the places they occupy.
    fn compute_ranks(&mut self) {
        if matches!(self.order_kind, OrderKind::NamesOnly | OrderKind::None) {
            return;
        }
        let strong = matches!(self.order_kind, OrderKind::Dynamic | OrderKind::Static);
        let mut sequence: Vec<usize> = Vec::new();
        let mut stack: Vec<Item> = vec![Item::Node(0)];
        while let Some(item) = stack.pop() {
            match item {
                Item::Unit(u) => {
                    let mut ts: Vec<usize> = self.units[u].tensors.iter().map(|x| x.1).collect();
                    ts.sort_by(|a, b| {
                        self.key_of_tensor(*a, strong)
                            .total_cmp(&self.key_of_tensor(*b, strong))
                    });
                    sequence.extend(ts);
                }
                Item::Node(x) => {
                    let mut kids: Vec<(Item, f64)> = self.nodes[x]
                        .units
                        .iter()
                        .map(|&u| (Item::Unit(u), self.item_key(Item::Unit(u), strong)))
                        .chain(
                            self.nodes[x]
                                .children
                                .iter()
                                .map(|&c| (Item::Node(c), self.item_key(Item::Node(c), strong))),
                        )
                        .collect();
                    kids.sort_by(|a, b| a.1.total_cmp(&b.1));
                    if !strong {
                        self.reorder_families(&mut kids);
                    }
                    for (it, _) in kids.into_iter().rev() {
                        stack.push(it);
                    }
                }
            }
        }
        let n = sequence.len().max(2) as f64 - 1.0;
        for (r, &i) in sequence.iter().enumerate() {
            self.rank[i] = Some(r as f64 / n);
        }
        // Rank spans per node, bottom-up.
        let mut post = vec![];
        let mut st = vec![0];
        while let Some(x) = st.pop() {
            post.push(x);
            st.extend(self.nodes[x].children.iter().copied());
        }
        for &x in post.iter().rev() {
            let mut span: Option<(f64, f64)> = None;
            let mut add = |r: f64| span = Some(span.map_or((r, r), |(a, b)| (a.min(r), b.max(r))));
            for &u in &self.nodes[x].units {
                for &(_, i) in &self.units[u].tensors {
                    if let Some(r) = self.rank[i] {
                        add(r);
                    }
                }
            }
            for &c in &self.nodes[x].children {
                if let Some((a, b)) = self.nodes[c].rank_span {
                    add(a);
                    add(b);
                }
            }
            self.nodes[x].rank_span = span;
        }
    }

    fn key_of_tensor(&self, i: usize, strong: bool) -> f64 {
        if strong {
            if let Some(e) = self.exec[i] {
                return e as f64;
            }
        }
        self.pos[i].unwrap_or(f64::MAX)
    }

    fn item_key(&self, item: Item, strong: bool) -> f64 {
        match item {
            Item::Node(c) => {
                if strong {
                    if let Some(e) = self.nodes[c].exec_min {
                        return e as f64;
                    }
                }
                self.nodes[c].pos_min.unwrap_or(f64::MAX)
            }
            Item::Unit(u) => self.units[u]
                .tensors
                .iter()
                .map(|(_, i)| self.key_of_tensor(*i, strong))
                .fold(f64::MAX, f64::min),
        }
    }

    /// Within one sibling list, members of a family (same stem, indexed) keep the slots
    /// the family occupies but are put in index order.
    fn reorder_families(&self, kids: &mut [(Item, f64)]) {
        let mut families: HashMap<(String, IndexKind), Vec<(usize, u64)>> = HashMap::new();
        for (slot, (it, _)) in kids.iter().enumerate() {
            let last = self.components(*it).last().cloned().unwrap_or_default();
            if let Some((stem, idx, kind)) = component_index(&last) {
                families
                    .entry((stem.to_string(), kind))
                    .or_default()
                    .push((slot, idx));
            }
        }
        for (_, members) in families {
            if members.len() < 2 {
                continue;
            }
            let slots: Vec<usize> = members.iter().map(|m| m.0).collect();
            let mut by_index = members.clone();
            by_index.sort_by_key(|m| m.1);
            let items: Vec<(Item, f64)> = by_index.iter().map(|m| kids[m.0]).collect();
            for (slot, it) in slots.into_iter().zip(items) {
                kids[slot].0 = it.0;
            }
        }
    }

    /// Path components of an item.
    pub fn components(&self, item: Item) -> &[String] {
        match item {
            Item::Node(x) => &self.node_components[x],
            Item::Unit(u) => &self.unit_components[u],
        }
    }

    /// The path of an item (module path, or tensor name of a bare parameter).
    pub fn item_path(&self, item: Item) -> &str {
        match item {
            Item::Node(x) => &self.nodes[x].path,
            Item::Unit(u) => &self.units[u].label,
        }
    }

    /// Number of tensors in an item.
    pub fn item_size(&self, item: Item) -> usize {
        match item {
            Item::Node(x) => self.nodes[x].n_tensors,
            Item::Unit(u) => self.units[u].tensors.len(),
        }
    }

    /// Signature hash of an item: a unit is a one-element subtree.
    pub fn item_hash(&self, item: Item, loose: bool) -> u64 {
        match item {
            Item::Node(x) => {
                if loose {
                    self.nodes[x].h_loose
                } else {
                    self.nodes[x].h_exact
                }
            }
            Item::Unit(u) => {
                if loose {
                    self.units[u].h_loose
                } else {
                    self.units[u].h_exact
                }
            }
        }
    }

    /// Loose signature multiset of an item.
    pub fn item_sig(&self, item: Item) -> Vec<u64> {
        match item {
            Item::Node(x) => self.nodes[x].loose.clone(),
            Item::Unit(u) => vec![self.units[u].loose],
        }
    }

    /// The items a node expands into: its units, and its child modules (a child module
    /// holding exactly one unit and no further modules becomes that unit).
    pub fn children_items(&self, x: usize) -> Vec<Item> {
        let nd = &self.nodes[x];
        let mut out: Vec<Item> = nd.units.iter().map(|&u| Item::Unit(u)).collect();
        for &c in &nd.children {
            let cn = &self.nodes[c];
            if cn.n_tensors == 0 {
                continue;
            }
            if cn.children.is_empty() && cn.units.len() == 1 {
                out.push(Item::Unit(cn.units[0]));
            } else {
                out.push(Item::Node(c));
            }
        }
        out
    }

    /// The first execution rank of an item, when an execution order is known.
    pub fn item_exec(&self, item: Item) -> Option<usize> {
        match item {
            Item::Node(x) => self.nodes[x].exec_min,
            Item::Unit(u) => self.units[u]
                .tensors
                .iter()
                .filter_map(|(_, i)| self.exec[*i])
                .min(),
        }
    }

    /// First and last execution rank of an item, when an execution order is known.
    pub fn item_exec_span(&self, item: Item) -> Option<(usize, usize)> {
        match item {
            Item::Node(x) => Some((self.nodes[x].exec_min?, self.nodes[x].exec_max?)),
            Item::Unit(u) => {
                let ranks = self.units[u]
                    .tensors
                    .iter()
                    .filter_map(|(_, i)| self.exec[*i]);
                Some((ranks.clone().min()?, ranks.max()?))
            }
        }
    }

    /// The module whose child an item is (as [`Self::children_items`] lists it): a unit's
    /// module's parent when the module holds only that unit, else the module itself.
    pub fn item_parent(&self, item: Item) -> Option<usize> {
        match item {
            Item::Node(x) => self.nodes[x].parent,
            Item::Unit(u) => {
                let n = self.units[u].node;
                let nd = &self.nodes[n];
                if n != 0 && nd.children.is_empty() && nd.units.len() == 1 {
                    nd.parent
                } else {
                    Some(n)
                }
            }
        }
    }

    /// Ranks of items by file or registration order alone (see [`Self::class_order`]).
    pub fn registration_order(&self, items: &[Item]) -> Option<Vec<usize>> {
        let mut keys: Vec<(f64, usize)> = Vec::with_capacity(items.len());
        for (k, &it) in items.iter().enumerate() {
            let p = match it {
                Item::Node(x) => self.nodes[x].pos_min,
                Item::Unit(u) => self.units[u]
                    .tensors
                    .iter()
                    .filter_map(|(_, i)| self.pos[*i])
                    .reduce(f64::min),
            }?;
            keys.push((p, k));
        }
        keys.sort_by(|a, b| a.0.total_cmp(&b.0));
        keys.windows(2)
            .all(|w| w[0].0 != w[1].0)
            .then(|| ranks_of(&keys.iter().map(|k| k.1).collect::<Vec<_>>()))
    }

    /// Order of a set of items as ranks (position of each item in sorted order) and the
    /// strength of the evidence, or `None` when some pair cannot be ordered.
    pub fn class_order(&self, items: &[Item]) -> Option<(Vec<usize>, Strength)> {
        let n = items.len();
        if n <= 1 {
            return Some((vec![0; n], Strength::Execution));
        }
        let exec: Vec<Option<usize>> = items.iter().map(|&it| self.item_exec(it)).collect();
        if exec.iter().all(|e| e.is_some()) {
            let mut keys: Vec<(usize, usize)> = exec
                .iter()
                .enumerate()
                .map(|(k, e)| (e.unwrap_or(0), k))
                .collect();
            keys.sort_unstable();
            if keys.windows(2).all(|w| w[0].0 != w[1].0) {
                return Some((
                    ranks_of(&keys.iter().map(|k| k.1).collect::<Vec<_>>()),
                    Strength::Execution,
                ));
            }
        }
        // Indices in names: every pair must be comparable.
        let comps: Vec<&[String]> = items.iter().map(|&it| self.components(it)).collect();
        if let Some(ranks) = names_order(&comps) {
            return Some((ranks, Strength::Names));
        }
        self.registration_order(items)
            .map(|ranks| (ranks, Strength::Weak))
    }

    /// Tokens of an item's path relative to `root` (a module path), for telling
    /// look-alikes apart.
    pub fn relative_tokens(&self, item: Item, root: &str) -> Vec<Token> {
        let p = self.item_path(item);
        let rel = if root.is_empty() {
            p
        } else if p == root {
            ""
        } else {
            p.strip_prefix(root)
                .and_then(|r| r.strip_prefix('.'))
                .unwrap_or(p)
        };
        tokenize(rel)
    }

    /// Whether tensor `i` lies inside the module at `path` (or is that module's tensor).
    pub fn tensor_inside(&self, i: usize, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        let name = &self.spec.tensors[i].name;
        name.len() > path.len() && name.starts_with(path) && name.as_bytes()[path.len()] == b'.'
            || self.unit_of[i].is_some_and(|u| {
                let l = &self.units[u].label;
                l == path
                    || (l.len() > path.len()
                        && l.starts_with(path)
                        && l.as_bytes()[path.len()] == b'.')
            })
    }

    /// Ancestor nodes of a tensor's unit, innermost first (root excluded).
    pub fn ancestors_of_tensor(&self, i: usize) -> Vec<usize> {
        let mut out = vec![];
        let Some(u) = self.unit_of[i] else { return out };
        let mut cur = Some(self.units[u].node);
        while let Some(x) = cur {
            if x == 0 {
                break;
            }
            out.push(x);
            cur = self.nodes[x].parent;
        }
        out
    }
}

/// Classes larger than this are ordered by names only when their paths line up
/// component by component (the pairwise comparison is quadratic).
const MAX_PAIRWISE_ORDER: usize = 512;

/// Ranks of paths ordered by the indices in their names, or `None` when some pair cannot
/// be compared ([`compare_by_names`]).
fn names_order(comps: &[&[String]]) -> Option<Vec<usize>> {
    let n = comps.len();
    // Fast path: equal lengths; at each component where the paths differ, all of them are
    // indices of one stem and kind; order by those indices, left to right.
    let len = comps[0].len();
    if comps.iter().all(|c| c.len() == len) {
        let varying: Vec<usize> = (0..len)
            .filter(|&k| comps.iter().any(|c| c[k] != comps[0][k]))
            .collect();
        let mut keys: Vec<(Vec<u64>, usize)> = Vec::with_capacity(n);
        let mut ok = true;
        for (i, c) in comps.iter().enumerate() {
            let mut key = Vec::with_capacity(varying.len());
            for &k in &varying {
                match (component_index(&c[k]), component_index(&comps[0][k])) {
                    (Some((s, v, kind)), Some((s0, _, k0))) if s == s0 && kind == k0 => key.push(v),
                    _ => ok = false,
                }
            }
            keys.push((key, i));
        }
        if ok {
            keys.sort();
            if keys.windows(2).all(|w| w[0].0 != w[1].0) {
                return Some(ranks_of(&keys.iter().map(|k| k.1).collect::<Vec<_>>()));
            }
            return None;
        }
    }
    if n > MAX_PAIRWISE_ORDER {
        return None;
    }
    let mut below = vec![0usize; n];
    for a in 0..n {
        for b in (a + 1)..n {
            match compare_by_names(comps[a], comps[b]) {
                Some(Ordering::Less) => below[b] += 1,
                Some(Ordering::Greater) => below[a] += 1,
                _ => return None,
            }
        }
    }
    let mut seen = vec![false; n];
    below
        .iter()
        .all(|&r| r < n && !std::mem::replace(&mut seen[r], true))
        .then_some(below)
}

/// Converts an order (item indices, first to last) into each item's rank.
fn ranks_of(order: &[usize]) -> Vec<usize> {
    let mut r = vec![0; order.len()];
    for (rank, &k) in order.iter().enumerate() {
        r[k] = rank;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> Vec<String> {
        components(p)
    }

    #[test]
    fn indices_in_names() {
        assert_eq!(
            component_index("layer10"),
            Some(("layer", 10, IndexKind::Number))
        );
        assert_eq!(component_index("3"), Some(("", 3, IndexKind::Number)));
        assert_eq!(
            component_index("conv_b"),
            Some(("conv_", 1, IndexKind::Letter))
        );
        assert_eq!(component_index("layernorm_after").map(|x| x.1), Some(1));
        assert_eq!(
            component_index("post_norm").map(|x| (x.0, x.1)),
            Some(("_norm", 1))
        );
        assert_eq!(
            compare_by_names(&c("a.ln_before"), &c("a.ln_after")),
            Some(Ordering::Less)
        );
        assert_eq!(compare_by_names(&c("a.ln_before"), &c("a.ln_1")), None);
        assert_eq!(component_index("attn_q"), None);
        assert_eq!(
            compare_by_names(&c("layers.9.mlp"), &c("layers.10.attn")),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_by_names(&c("blocks.3.1"), &c("blocks.1.2")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_by_names(&c("a.norm_b"), &c("a.norm_a")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_by_names(&c("a.input_norm"), &c("a.post_norm")),
            None
        );
        assert_eq!(compare_by_names(&c("a.conv1"), &c("a.bn1")), None);
        // A branch's steps named by letters: alone, or in front of a role.
        assert_eq!(component_index("c"), Some(("", 2, IndexKind::Letter)));
        assert_eq!(component_index("b_bn"), Some(("_bn", 1, IndexKind::Letter)));
        assert_eq!(compare_by_names(&c("f.a"), &c("f.c")), Some(Ordering::Less));
        assert_eq!(component_index("q"), None);
        assert_eq!(component_index("x_proj"), None);
    }

    #[test]
    fn order_of_look_alikes_by_names() {
        let paths = [c("layers.10.mlp"), c("layers.9.mlp"), c("layers.0.mlp")];
        let refs: Vec<&[String]> = paths.iter().map(|p| p.as_slice()).collect();
        assert_eq!(names_order(&refs), Some(vec![2, 1, 0]));
        let nested = [c("blocks.1.0"), c("blocks.0.2"), c("blocks.0.10")];
        let refs: Vec<&[String]> = nested.iter().map(|p| p.as_slice()).collect();
        assert_eq!(names_order(&refs), Some(vec![2, 0, 1]));
        let mixed = [c("x.input_norm"), c("x.post_norm")];
        let refs: Vec<&[String]> = mixed.iter().map(|p| p.as_slice()).collect();
        assert_eq!(names_order(&refs), None);
        let uneven = [c("a.conv1"), c("a.sub.conv2")];
        let refs: Vec<&[String]> = uneven.iter().map(|p| p.as_slice()).collect();
        assert_eq!(names_order(&refs), None);
    }
}
