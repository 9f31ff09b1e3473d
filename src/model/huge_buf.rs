//! Byte buffers for the weight panels, in memory the kernel may back with 2 MiB pages.
//!
//! The host engine streams its weight panels from memory on every token. With 4 KiB pages a
//! stream of ~30 GB/s crosses ~7 million pages a second, each a TLB miss and a page walk, and
//! the hardware prefetchers stop at every page boundary. Where transparent huge pages are
//! enabled for regions that ask for them (Linux `madvise` mode, the default of many
//! distributions, or `always`), buffers of [`SMALL`] bytes or more come from anonymous maps
//! aligned to 2 MiB and advised `MADV_HUGEPAGE`: one map of their own from [`CHUNK`] / 2 bytes
//! on, else a slice of a shared [`CHUNK`]-byte map (a small model's matrices are far smaller
//! than a huge page), handed out once and never reused, so every buffer starts zeroed. A map
//! is unmapped when the last buffer in it is dropped. Smaller buffers, other systems, a failed
//! map, or `MSN_HUGE_PAGES=off` give a plain `Vec`; only the speed differs.
//!
//! Measured on a 2-core AMD EPYC VM (Zen 4), 2026-12-05, interleaved A/B: 1B-shape Q4_0
//! one-token decode 50 -> 54 tokens/s, SmolLM2 one-token forward -4% to -8%, 8-token forward
//! -3%; the price is in loading, where the kernel zeroes each 2 MiB page at its first write
//! (8B-shape Q4_K_M load 3.0 -> 4.7 s on that VM, whose first touch of memory is slow).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The environment variable that turns huge pages off (`off`) or on (`on`, the default).
pub(crate) const HUGE_PAGES_VAR: &str = "MSN_HUGE_PAGES";

/// Buffers from this size on come from huge-page maps.
const SMALL: usize = 64 << 10;

/// Bytes of a shared map; buffers from half of it on get their own.
const CHUNK: usize = 64 << 20;

/// The huge page size the maps are aligned to.
const HUGE: usize = 2 << 20;

/// Where buffers start inside a shared map (a cache line).
const ALIGN: usize = 64;

/// A zero-initialized byte buffer, in huge pages where the system gives them.
pub(crate) struct HugeBuf(Inner);

enum Inner {
    Vec(Vec<u8>),
    /// `len` bytes at `off` in `map`, which no other buffer overlaps.
    Map {
        map: Arc<Map>,
        off: usize,
        len: usize,
    },
}

/// An anonymous map and the first 2 MiB boundary in it.
struct Map {
    start: *mut u8,
    len: usize,
    #[cfg(target_os = "linux")]
    _map: memmap2::MmapMut,
}

// SAFETY: `start` points into `_map`, which lives as long as this value; the buffers that share
// a map each own a disjoint range of it (`HugeBuf`'s invariant), so no two threads reach the
// same bytes through it.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    /// A map of at least `len` bytes starting on a 2 MiB boundary, advised for huge pages.
    #[cfg(target_os = "linux")]
    fn new(len: usize) -> Option<Self> {
        let mut map = memmap2::MmapMut::map_anon(len.checked_add(HUGE)?).ok()?;
        // A refusal (huge pages off, an old kernel) leaves ordinary pages: nothing to handle.
        let _ = map.advise(memmap2::Advice::HugePage);
        let skip = map.as_ptr().align_offset(HUGE);
        // SAFETY: `skip < HUGE` and the map is `len + HUGE` bytes long.
        let start = unsafe { map.as_mut_ptr().add(skip) };
        Some(Self {
            start,
            len,
            _map: map,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_len: usize) -> Option<Self> {
        None
    }
}

/// Whether buffers may come from huge-page maps: [`HUGE_PAGES_VAR`] unset, empty or `on`.
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| check_huge_pages_var().unwrap_or(true))
}

/// Checks [`HUGE_PAGES_VAR`]: unset, empty, `on` or `off`; returns whether huge pages are on.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] naming the valid values for anything else.
pub(crate) fn check_huge_pages_var() -> crate::Result<bool> {
    huge_pages_setting(std::env::var(HUGE_PAGES_VAR).ok().as_deref())
}

/// What [`HUGE_PAGES_VAR`]'s value `v` says.
fn huge_pages_setting(v: Option<&str>) -> crate::Result<bool> {
    match v {
        None | Some("" | "on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(crate::Error::InvalidArgument(format!(
            "{HUGE_PAGES_VAR}={other}: use `on` (the default) or `off`"
        ))),
    }
}

/// The shared map buffers are being cut from and the next free offset in it. Held weakly: a map
/// lives only while a buffer in it does.
static SHARED: Mutex<(Weak<Map>, usize)> = Mutex::new((Weak::new(), 0));

impl HugeBuf {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        if len >= SMALL && enabled() {
            let got = if len >= CHUNK / 2 {
                Map::new(len).map(|m| (Arc::new(m), 0))
            } else {
                shared(len)
            };
            if let Some((map, off)) = got {
                return Self(Inner::Map { map, off, len });
            }
        }
        Self(Inner::Vec(vec![0u8; len]))
    }
}

/// `len` bytes (less than [`CHUNK`]) never handed out before, from the current shared map or
/// a new one.
fn shared(len: usize) -> Option<(Arc<Map>, usize)> {
    let mut cur = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let (weak, next) = &mut *cur;
    if let Some(map) = weak.upgrade()
        && *next + len <= map.len
    {
        let off = *next;
        *next = (off + len).next_multiple_of(ALIGN);
        return Some((map, off));
    }
    let map = Arc::new(Map::new(CHUNK)?);
    *weak = Arc::downgrade(&map);
    *next = len.next_multiple_of(ALIGN);
    Some((map, 0))
}

impl Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Vec(v) => v,
            // SAFETY: `off + len <= map.len` and the range is this buffer's alone.
            Inner::Map { map, off, len } => unsafe {
                std::slice::from_raw_parts(map.start.add(*off), *len)
            },
        }
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Inner::Vec(v) => v,
            // SAFETY: as in `deref`, and `&mut self` makes this the only reference to it.
            Inner::Map { map, off, len } => unsafe {
                std::slice::from_raw_parts_mut(map.start.add(*off), *len)
            },
        }
    }
}

impl Clone for HugeBuf {
    fn clone(&self) -> Self {
        let mut b = Self::zeroed(self.len());
        b.copy_from_slice(self);
        b
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeBuf({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(b: &mut [u8], seed: usize) {
        for (i, v) in b.iter_mut().enumerate() {
            *v = ((i * 7 + seed) % 251) as u8;
        }
    }

    fn holds(b: &[u8], seed: usize) -> bool {
        b.iter()
            .enumerate()
            .all(|(i, &v)| v == ((i * 7 + seed) % 251) as u8)
    }

    #[test]
    fn buffers_of_every_size_start_zeroed_and_hold_what_is_written() {
        let sizes = [0, 1, 4095, SMALL - 1, SMALL, 3 * SMALL + 5, CHUNK / 2 - 1];
        let sizes = sizes.into_iter().chain([CHUNK / 2, CHUNK + 12_345]);
        for len in sizes {
            let mut b = HugeBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0), "{len} bytes zeroed");
            fill(&mut b, len);
            let c = b.clone();
            assert!(holds(&c, len) && holds(&b, len), "{len} bytes");
        }
    }

    #[test]
    fn buffers_cut_from_shared_maps_never_overlap() {
        // Enough buffers to fill several shared maps, written from several threads at once,
        // some dropped on the way (a map lives on while any buffer in it does).
        let lens: Vec<usize> = (0..160)
            .map(|i| SMALL + (i * 104_729) % (CHUNK / 8))
            .collect();
        let mut bufs: Vec<(usize, HugeBuf)> = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let b = HugeBuf::zeroed(len);
            assert!(b.iter().all(|&v| v == 0), "buffer {i} zeroed");
            bufs.push((i, b));
            if i % 5 == 4 {
                bufs.remove(i % 3);
            }
        }
        std::thread::scope(|s| {
            for (seed, b) in bufs.iter_mut() {
                s.spawn(|| fill(b, *seed));
            }
        });
        for (seed, b) in &bufs {
            assert!(holds(b, *seed), "buffer {seed} holds its own bytes");
        }
    }

    #[test]
    fn the_setting_takes_on_and_off_and_names_them_for_anything_else() {
        let cases = [
            (None, true),
            (Some(""), true),
            (Some("on"), true),
            (Some("off"), false),
        ];
        for (value, want) in cases {
            assert_eq!(huge_pages_setting(value).ok(), Some(want), "{value:?}");
        }
        for bad in ["yes", "ON", "0", "of"] {
            let err = huge_pages_setting(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("`on`") && err.contains("`off`") && err.contains(bad),
                "{err}"
            );
        }
    }
}
