//! A draft memory shared across requests: every prompt and output a decoder has seen, indexed
//! by suffix, so later requests draft what followed the same text before (SuffixDecoding's idea,
//! llama.cpp's dynamic lookup cache). Bounded, shareable between threads, saved to a file.

use crate::decode::suffix_index::{Continuations, SuffixIndex};
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// File magic and the version this build writes and reads.
const MAGIC: &[u8; 8] = b"MSNDRAFT";
const VERSION: u32 = 1;

/// Every prompt and output seen so far, indexed by suffix with counts, for drafting across
/// requests. [`crate::TrJacobi`] and [`crate::SuffixDecoder`] keep one by default and add each
/// prompt and its output to it; hand several decoders clones of one memory
/// ([`crate::TrJacobi::with_memory`]) to share it (a server's requests, several threads): clones
/// share the same memory.
///
/// Bounded by `capacity` tokens: the oldest documents are evicted first. Saved and loaded as a
/// versioned file; a truncated or foreign file is [`Error::MalformedMemory`].
///
/// # Examples
/// ```
/// use msn::DraftMemory;
///
/// let memory = DraftMemory::new(1 << 16);
/// memory.add(&[1, 2, 3, 4]);
/// let shared = memory.clone(); // the same memory
/// shared.add(&[5, 6]);
/// assert_eq!((memory.documents(), memory.tokens()), (2, 6));
///
/// let path = std::env::temp_dir().join("msn-doc-memory.bin");
/// memory.save(&path)?;
/// assert_eq!(DraftMemory::load(&path)?.tokens(), 6);
/// # Ok::<(), msn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DraftMemory {
    inner: Arc<RwLock<SuffixIndex>>,
}

impl Default for DraftMemory {
    /// A memory of 2^18 tokens (several hundred answers; about 70 MiB when full: 273 bytes a
    /// token measured on text-like ids, most of it the n-gram lists).
    fn default() -> Self {
        Self::new(1 << 18)
    }
}

impl DraftMemory {
    /// An empty memory keeping at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(RwLock::new(SuffixIndex::new(capacity))),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, SuffixIndex> {
        // A writer that panicked left whole documents or none: the data stays usable.
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SuffixIndex> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds one document (a prompt, an output, or both as one text), evicting the oldest beyond
    /// capacity.
    pub fn add(&self, tokens: &[u32]) {
        self.write().add_document(tokens);
    }

    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.read().tokens()
    }

    /// Documents held.
    pub fn documents(&self) -> usize {
        self.read().documents().count()
    }

    /// The most tokens held.
    pub fn capacity(&self) -> usize {
        self.read().capacity()
    }

    /// A separate memory holding the same documents now.
    pub fn snapshot(&self) -> DraftMemory {
        Self {
            inner: Arc::new(RwLock::new(self.read().clone())),
        }
    }

    /// Whether `other` is this same memory (a clone of it).
    pub fn same_as(&self, other: &DraftMemory) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// What followed `context`'s suffix in the memory.
    pub(crate) fn continuations(&self, context: &[u32], depth: usize) -> Continuations {
        self.read().continuations(context, depth)
    }

    /// The memory as bytes (the file format of [`DraftMemory::save`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let idx = self.read();
        let mut out = Vec::with_capacity(32 + 4 * (idx.tokens() + idx.documents().count()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(idx.capacity() as u64).to_le_bytes());
        out.extend_from_slice(&(idx.documents().count() as u64).to_le_bytes());
        for doc in idx.documents() {
            out.extend_from_slice(&(doc.len() as u32).to_le_bytes());
            for t in doc {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        out
    }

    /// A memory from [`DraftMemory::to_bytes`]'s format.
    ///
    /// # Errors
    /// [`Error::MalformedMemory`] (with `path` `"<bytes>"`) for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        parse(bytes).map_err(|reason| Error::MalformedMemory {
            path: "<bytes>".into(),
            reason,
        })
    }

    /// Writes the memory to `path` (atomically: a crash leaves the old file or the new one).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::write_atomic(path, &self.to_bytes())
    }

    /// Reads a memory written by [`DraftMemory::save`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::MalformedMemory`] when it is not a
    /// draft memory of this version (truncated, another format, impossible sizes).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        parse(&bytes).map_err(|reason| Error::MalformedMemory {
            path: path.into(),
            reason,
        })
    }
}

/// Reads little-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        if self.0.len() < N {
            return Err(format!("truncated in the {what}"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.take::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.take::<8>(what).map(u64::from_le_bytes)
    }
}

fn parse(bytes: &[u8]) -> std::result::Result<DraftMemory, String> {
    let mut r = Reader(bytes);
    if &r.take::<8>("magic")? != MAGIC {
        return Err("wrong magic bytes".into());
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(format!("version {version}; this build reads {VERSION}"));
    }
    let capacity = r.u64("capacity")?;
    let docs = r.u64("document count")?;
    // Every document takes at least its 4-byte length.
    if capacity > u64::from(u32::MAX) || docs > (r.0.len() / 4) as u64 {
        return Err(format!(
            "impossible sizes (capacity {capacity}, {docs} documents)"
        ));
    }
    let memory = DraftMemory::new(capacity as usize);
    {
        let mut idx = memory.write();
        let mut doc = Vec::new();
        for d in 0..docs {
            let len = r.u32("document length")? as usize;
            if len > r.0.len() / 4 {
                return Err(format!("document {d} is longer than the file"));
            }
            doc.clear();
            for _ in 0..len {
                let t = r.u32("tokens")?;
                if t == u32::MAX {
                    return Err(format!("document {d} holds the reserved token {t}"));
                }
                doc.push(t);
            }
            idx.add_document(&doc);
        }
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last document", r.0.len()));
    }
    Ok(memory)
}
