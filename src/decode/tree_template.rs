//! The static part of TR-Jacobi's token tree: rank paths, the paper's 63-path default, and the
//! prefix rule that lets a budget cut the tree anywhere.

use crate::error::{Error, Result};

/// The MSN paper's 63-path template (69 tokens per forward with the root and a 5-token
/// retrieval chain), most likely paths first.
const MSN_PATHS: &str = "[0] [0,0] [1] [0,1] [2] [0,0,0] [1,0] [0,2] [3] [0,3] [4] [0,4] [2,0] [0,5] \
[0,0,1] [5] [0,6] [6] [0,7] [0,1,0] [1,1] [7] [0,8] [0,0,2] [3,0] [0,9] [8] [9] [1,0,0] [0,2,0] \
[1,2] [0,0,3] [4,0] [2,1] [0,0,4] [0,0,5] [0,0,0,0] [0,1,1] [0,0,6] [0,3,0] [5,0] [1,3] [0,0,7] \
[0,0,8] [0,0,9] [6,0] [0,4,0] [1,4] [7,0] [0,1,2] [2,0,0] [3,1] [2,2] [8,0] [0,5,0] [1,5] \
[1,0,1] [0,2,1] [9,0] [0,6,0] [0,0,0,1] [1,6] [0,7,0]";

/// A static tree of rank paths: node `[r1, .., rd]` carries `C[d][rd]`, the candidate of rank
/// `rd` at depth `d`. Paths are in priority order and every path's parent comes before it, so any
/// prefix of the template is itself a tree (what a smaller budget uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeTemplate {
    pub(crate) paths: Vec<Vec<usize>>,
    /// Index of each path's parent path (`None` for depth 1).
    pub(crate) parents: Vec<Option<usize>>,
}

impl TreeTemplate {
    /// A template from rank paths.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a path is empty, repeated, or comes before its parent.
    pub fn new(paths: Vec<Vec<usize>>) -> Result<Self> {
        let mut parents = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            if p.is_empty() || paths[..i].contains(p) {
                return Err(Error::InvalidArgument(format!(
                    "tree template path {i} ({p:?}) is empty or repeated; give each rank path once"
                )));
            }
            let parent = if p.len() == 1 {
                None
            } else {
                let up = &p[..p.len() - 1];
                Some(paths[..i].iter().position(|q| q == up).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "tree template path {p:?} comes before its parent {up:?}; list parents first"
                    ))
                })?)
            };
            parents.push(parent);
        }
        Ok(Self { paths, parents })
    }

    /// The MSN paper's template: 63 paths, depth 4, ranks below 10.
    pub fn msn() -> Self {
        Self::parse(MSN_PATHS).expect("the built-in template is valid")
    }

    /// A single chain of `depth` rank-0 nodes: plain Jacobi's window as a template.
    pub fn chain(depth: usize) -> Self {
        Self::new((1..=depth).map(|d| vec![0; d]).collect()).expect("a chain is valid")
    }

    /// Parses `"[0] [0,0] [1] ..."`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on bad syntax or an invalid tree.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "cannot parse tree template {s:?}; write rank paths like \"[0] [0,0] [1]\""
            ))
        };
        let mut paths = Vec::new();
        for part in s.split(']') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let inner = part.strip_prefix('[').ok_or_else(bad)?;
            let path = inner
                .split(',')
                .map(|r| r.trim().parse::<usize>().map_err(|_| bad()))
                .collect::<Result<Vec<_>>>()?;
            paths.push(path);
        }
        Self::new(paths)
    }

    /// Number of paths (tree nodes without the root).
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True for the empty template.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Deepest path.
    pub fn depth(&self) -> usize {
        self.paths.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Largest rank + 1 (the `K` the template needs).
    pub fn ranks(&self) -> usize {
        self.paths.iter().flatten().max().map_or(0, |r| r + 1)
    }

    /// The rank paths.
    pub fn paths(&self) -> &[Vec<usize>] {
        &self.paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_template_has_63_paths_of_depth_4() {
        let t = TreeTemplate::msn();
        assert_eq!((t.len(), t.depth(), t.ranks()), (63, 4, 10));
    }

    #[test]
    fn templates_reject_orphans_and_bad_syntax() {
        assert!(TreeTemplate::parse("[0] [1,0]").is_err());
        assert!(TreeTemplate::parse("[0] [0]").is_err());
        assert!(TreeTemplate::parse("[0] [x]").is_err());
        assert_eq!(
            TreeTemplate::parse("[0] [0,0]").unwrap(),
            TreeTemplate::chain(2)
        );
    }
}
