//! Models where users keep them: a Hugging Face id (`Qwen/Qwen2.5-0.5B-Instruct`, optionally
//! `@revision`) resolved in the local Hugging Face cache, offline, as `huggingface_hub` lays it
//! out: `<cache>/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/<commit>/`, the commit of a branch
//! or tag read from `refs/<name>`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The cache folder, as `huggingface_hub` chooses it: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub(crate) fn hub_cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("huggingface").join("hub")
}

/// Whether `spec` has the shape of a Hugging Face model id: `owner/name` or
/// `owner/name@revision`, of letters, digits, `-`, `_` and `.`, neither part starting with a dot.
pub(crate) fn looks_like_id(spec: &str) -> bool {
    let id = spec.split_once('@').map_or(spec, |(id, _)| id);
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part.len() <= 96
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(id.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

/// The snapshot folder of model `spec` (`owner/name[@revision]`, revision `main` by default: a
/// branch or tag name, or a commit hash) in `cache`.
///
/// # Errors
/// [`Error::ModelNotFound`] when the cache does not hold it.
pub(crate) fn snapshot_in(cache: &Path, spec: &str) -> Result<PathBuf> {
    let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let not_found = || Error::ModelNotFound {
        id: spec.to_string(),
        looked: repo.display().to_string(),
    };
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        // Not a branch or tag: a commit hash itself.
        Err(_) => revision.to_string(),
    };
    let valid = !commit.is_empty() && commit.chars().all(|c| c.is_ascii_alphanumeric());
    let dir = repo.join("snapshots").join(&commit);
    match valid && dir.join("config.json").is_file() {
        true => Ok(dir),
        false => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_paths() {
        for id in [
            "Qwen/Qwen2.5-0.5B-Instruct",
            "a/b",
            "meta-llama/Llama-3.2-1B@main",
        ] {
            assert!(looks_like_id(id), "{id}");
        }
        for not in [
            "model.gguf",
            "/abs/dir",
            "a/b/c",
            "./a",
            "../x/y",
            "a/",
            "/b",
            "a b/c",
        ] {
            assert!(!looks_like_id(not), "{not}");
        }
    }

    /// The layout `huggingface_hub` writes: a ref file naming the snapshot's commit.
    #[test]
    fn snapshots_resolve_by_branch_and_by_commit() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--Qwen--Tiny");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(snapshot_in(cache.path(), "Qwen/Tiny").unwrap(), snap);
        assert_eq!(snapshot_in(cache.path(), "Qwen/Tiny@abc123").unwrap(), snap);
        for missing in ["Qwen/Other", "Qwen/Tiny@dev", "Qwen/Tiny@.."] {
            let e = snapshot_in(cache.path(), missing).unwrap_err();
            assert!(matches!(e, Error::ModelNotFound { .. }), "{missing}: {e}");
        }
    }
}
