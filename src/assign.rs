//! The assign stage: one-to-one assignment of candidates by score.
//!
//! Candidates form a sparse bipartite graph (source × target, an edge per allowed pair
//! with its score). The graph is split into connected blocks and each block is solved
//! optimally with a linear sum assignment (the `lsap` crate, scipy's algorithm), so a
//! tensor is never taken first-come by a worse candidate. Pairs that are not candidates
//! are never assigned. Each assigned pair gets a margin: how much better it is than the
//! best alternative its row or column had, which callers use as confidence and to
//! refuse ties.

use ndarray::Array2;
use std::collections::HashMap;

/// Score given to non-candidate cells of a block's dense matrix: low enough that the
/// solver only uses such a cell when a row has no candidate left, and those cells are
/// dropped from the result.
const NOT_A_CANDIDATE: f64 = -1.0e6;

/// Blocks larger than this many rows × columns are solved greedily by descending score
/// instead of optimally, to bound time and memory (dense matrices of this size).
pub const MAX_DENSE_CELLS: usize = 4_000_000;

/// One candidate pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    /// Row (source) index.
    pub row: usize,
    /// Column (target) index.
    pub col: usize,
    /// Score; higher is better.
    pub score: f64,
}

/// One assigned pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assigned {
    /// Row (source) index.
    pub row: usize,
    /// Column (target) index.
    pub col: usize,
    /// The pair's score.
    pub score: f64,
    /// Score minus the best other candidate of the same row or column (the pair's score
    /// itself when there is none).
    pub margin: f64,
    /// The best other candidate of the row, if any: (column, score).
    pub runner_up_col: Option<(usize, f64)>,
    /// The best other candidate of the column, if any: (row, score).
    pub runner_up_row: Option<(usize, f64)>,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Splits candidate edges into connected blocks (rows and columns linked by an edge).
/// Returns each block's edges; blocks are ordered by their smallest row.
pub fn blocks(n_rows: usize, edges: &[Edge]) -> Vec<Vec<Edge>> {
    // Union-find over rows and columns (columns offset by n_rows, mapped sparsely).
    let mut col_id: HashMap<usize, usize> = HashMap::new();
    for e in edges {
        let next = n_rows + col_id.len();
        col_id.entry(e.col).or_insert(next);
    }
    let mut parent: Vec<usize> = (0..n_rows + col_id.len()).collect();
    for e in edges {
        let (a, b) = (find(&mut parent, e.row), find(&mut parent, col_id[&e.col]));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: HashMap<usize, Vec<Edge>> = HashMap::new();
    for e in edges {
        let r = find(&mut parent, e.row);
        by_root.entry(r).or_default().push(*e);
    }
    let mut out: Vec<Vec<Edge>> = by_root.into_values().collect();
    out.sort_by_key(|b| b.iter().map(|e| e.row).min().unwrap_or(0));
    out
}

/// Solves one block optimally (or greedily past [`MAX_DENSE_CELLS`]).
fn solve_block(block: &[Edge]) -> Vec<(usize, usize, f64)> {
    let mut rows: Vec<usize> = block.iter().map(|e| e.row).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut cols: Vec<usize> = block.iter().map(|e| e.col).collect();
    cols.sort_unstable();
    cols.dedup();
    if rows.len() == 1 || cols.len() == 1 || rows.len() * cols.len() > MAX_DENSE_CELLS {
        return greedy(block);
    }
    let ri: HashMap<usize, usize> = rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let ci: HashMap<usize, usize> = cols.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let mut m = Array2::from_elem((rows.len(), cols.len()), NOT_A_CANDIDATE);
    for e in block {
        let cell = &mut m[[ri[&e.row], ci[&e.col]]];
        *cell = cell.max(e.score);
    }
    // lsap takes the matrix flattened row by row: the standard layout's own order.
    let flat: Vec<f64> = m.iter().copied().collect();
    match lsap::solve(rows.len(), cols.len(), &flat, true) {
        Ok((r, c)) => r
            .into_iter()
            .zip(c)
            .filter(|&(i, j)| m[[i, j]] > NOT_A_CANDIDATE)
            .map(|(i, j)| (rows[i], cols[j], m[[i, j]]))
            .collect(),
        // The solver only fails on NaN or infinite input, which scores never are; fall
        // back to greedy rather than lose the block.
        Err(_) => greedy(block),
    }
}

/// Greedy by descending score (ties by row, then column): used for one-row or one-column
/// blocks, where it is optimal, and for oversized blocks.
fn greedy(block: &[Edge]) -> Vec<(usize, usize, f64)> {
    let mut sorted = block.to_vec();
    sorted.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.row.cmp(&b.row))
            .then(a.col.cmp(&b.col))
    });
    let mut used_r = std::collections::HashSet::new();
    let mut used_c = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in sorted {
        if !used_r.contains(&e.row) && !used_c.contains(&e.col) {
            used_r.insert(e.row);
            used_c.insert(e.col);
            out.push((e.row, e.col, e.score));
        }
    }
    out
}

/// Assigns rows to columns one-to-one, maximizing the total score of each connected
/// block of candidates. `n_rows` bounds the row indices. Results are sorted by row.
pub fn assign(n_rows: usize, edges: &[Edge]) -> Vec<Assigned> {
    let mut best_in_row: HashMap<usize, Vec<(usize, f64)>> = HashMap::new();
    let mut best_in_col: HashMap<usize, Vec<(usize, f64)>> = HashMap::new();
    for e in edges {
        best_in_row.entry(e.row).or_default().push((e.col, e.score));
        best_in_col.entry(e.col).or_default().push((e.row, e.score));
    }
    let runner_up = |list: Option<&Vec<(usize, f64)>>, except: usize| -> Option<(usize, f64)> {
        list?
            .iter()
            .filter(|(k, _)| *k != except)
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    };
    let mut out = Vec::new();
    let blocks = blocks(n_rows, edges);
    let progress = crate::progress::Progress::new(blocks.len() as u64, "assignment");
    for block in blocks {
        progress.inc(1);
        for (row, col, score) in solve_block(&block) {
            let runner_up_col = runner_up(best_in_row.get(&row), col);
            let runner_up_row = runner_up(best_in_col.get(&col), row);
            let best_other = runner_up_col
                .map(|x| x.1)
                .into_iter()
                .chain(runner_up_row.map(|x| x.1))
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let margin = match best_other {
                Some(o) => score - o,
                None => score,
            };
            out.push(Assigned {
                row,
                col,
                score,
                margin,
                runner_up_col,
                runner_up_row,
            });
        }
    }
    progress.finish();
    out.sort_by_key(|a| a.row);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(row: usize, col: usize, score: f64) -> Edge {
        Edge { row, col, score }
    }

    #[test]
    fn optimal_not_greedy() {
        // Greedy would take (0,0)=0.9 and leave row 1 with (1,1)=0.1: total 1.0.
        // Optimal is (0,1)+(1,0) = 0.8+0.8 = 1.6.
        let edges = [e(0, 0, 0.9), e(0, 1, 0.8), e(1, 0, 0.8), e(1, 1, 0.1)];
        let a = assign(2, &edges);
        let pairs: Vec<(usize, usize)> = a.iter().map(|x| (x.row, x.col)).collect();
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn non_candidates_never_assigned() {
        // Row 1 has no candidate left once row 0 takes column 0.
        let edges = [e(0, 0, 0.9), e(1, 0, 0.5)];
        let a = assign(2, &edges);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].row, a[0].col), (0, 0));
        assert!((a[0].margin - 0.4).abs() < 1e-12);
    }

    #[test]
    fn blocks_are_independent() {
        let edges = [e(0, 10, 0.5), e(1, 11, 0.7), e(2, 10, 0.6)];
        let b = blocks(3, &edges);
        assert_eq!(b.len(), 2);
        let a = assign(3, &edges);
        assert_eq!(a.len(), 2);
        assert!(a.iter().any(|x| x.row == 2 && x.col == 10));
        assert!(a
            .iter()
            .any(|x| x.row == 1 && x.col == 11 && x.runner_up_col.is_none()));
    }

    #[test]
    fn rectangular_blocks() {
        let edges = [e(0, 0, 0.2), e(0, 1, 0.9), e(0, 2, 0.3)];
        let a = assign(1, &edges);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].col, 1);
        assert_eq!(a[0].runner_up_col, Some((2, 0.3)));
    }
}
