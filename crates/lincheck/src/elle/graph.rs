//! A small labelled digraph with iterative Tarjan SCC and a cycle search restricted to some edge
//! kinds. Iterative on purpose: histories have tens of thousands of transactions, too deep for
//! recursion.

/// Kinds of dependency edges (Adya): write-write, write-read, read-write (anti-dependency),
/// and real-time order (one transaction completed before the other began).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    WW,
    WR,
    RW,
    Realtime,
}

impl std::fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EdgeKind::WW => "ww",
            EdgeKind::WR => "wr",
            EdgeKind::RW => "rw",
            EdgeKind::Realtime => "rt",
        })
    }
}

pub(crate) struct Graph {
    pub adj: Vec<Vec<(usize, EdgeKind)>>,
}

impl Graph {
    pub fn new(nodes: usize) -> Self {
        Graph {
            adj: vec![Vec::new(); nodes],
        }
    }

    pub fn add(&mut self, from: usize, to: usize, kind: EdgeKind) {
        if from != to {
            self.adj[from].push((to, kind));
        }
    }

    /// Strongly connected components with more than one node (Tarjan, iterative).
    pub fn nontrivial_sccs(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.adj.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0usize; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next_index = 0;
        let mut out = Vec::new();
        // Call stack of (node, position in its adjacency list).
        let mut calls: Vec<(usize, usize)> = Vec::new();
        for root in 0..n {
            if index[root] != UNSEEN {
                continue;
            }
            calls.push((root, 0));
            index[root] = next_index;
            low[root] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
                if let Some(&(w, _)) = self.adj[v].get(*pos) {
                    *pos += 1;
                    if index[w] == UNSEEN {
                        index[w] = next_index;
                        low[w] = next_index;
                        next_index += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 {
                        out.push(comp);
                    }
                }
            }
        }
        out
    }

    /// Some cycle inside `members` using only edges whose kind `allowed` accepts, as a list of
    /// (node, kind of the edge to the next node; the last wraps to the first).
    pub fn find_cycle(
        &self,
        members: &[usize],
        in_component: &[bool],
        allowed: impl Fn(EdgeKind) -> bool,
    ) -> Option<Vec<(usize, EdgeKind)>> {
        // 0 = white, 1 = on the DFS path, 2 = done. Indexed by node; only members are touched.
        let mut color = std::collections::HashMap::with_capacity(members.len());
        for &start in members {
            if color.contains_key(&start) {
                continue;
            }
            // Path of (node, adjacency position, kind of the edge that led to the next node).
            let mut path: Vec<(usize, usize, EdgeKind)> = vec![(start, 0, EdgeKind::WW)];
            color.insert(start, 1u8);
            while let Some(&mut (v, ref mut pos, ref mut via)) = path.last_mut() {
                let Some(&(w, kind)) = self.adj[v].get(*pos) else {
                    color.insert(v, 2);
                    path.pop();
                    continue;
                };
                *pos += 1;
                if !in_component[w] || !allowed(kind) {
                    continue;
                }
                *via = kind;
                match color.get(&w).copied().unwrap_or(0) {
                    0 => {
                        color.insert(w, 1);
                        path.push((w, 0, EdgeKind::WW));
                    }
                    1 => {
                        let from = path.iter().position(|&(node, _, _)| node == w)?;
                        return Some(path[from..].iter().map(|&(n, _, k)| (n, k)).collect());
                    }
                    _ => {}
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sccs_and_restricted_cycles() {
        let mut g = Graph::new(5);
        g.add(0, 1, EdgeKind::WW);
        g.add(1, 2, EdgeKind::RW);
        g.add(2, 0, EdgeKind::WR);
        g.add(2, 1, EdgeKind::WW);
        g.add(3, 4, EdgeKind::WW);
        let sccs = g.nontrivial_sccs();
        assert_eq!(sccs.len(), 1);
        let mut comp = sccs[0].clone();
        comp.sort();
        assert_eq!(comp, vec![0, 1, 2]);
        let mut inside = vec![false; 5];
        for &v in &comp {
            inside[v] = true;
        }
        assert!(g
            .find_cycle(&comp, &inside, |k| k == EdgeKind::WW)
            .is_none());
        let c = g.find_cycle(&comp, &inside, |k| k != EdgeKind::WR).unwrap();
        let mut nodes: Vec<usize> = c.iter().map(|&(n, _)| n).collect();
        nodes.sort();
        assert_eq!(nodes, vec![1, 2]);
        let full = g.find_cycle(&comp, &inside, |_| true).unwrap();
        assert!(full.len() >= 2);
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let n = 200_000;
        let mut g = Graph::new(n);
        for i in 0..n - 1 {
            g.add(i, i + 1, EdgeKind::WW);
        }
        g.add(n - 1, 0, EdgeKind::RW);
        let sccs = g.nontrivial_sccs();
        assert_eq!(sccs.len(), 1);
        assert_eq!(sccs[0].len(), n);
    }
}
