//! Large byte buffers the kernel may back with 2 MiB pages.
//!
//! The host engine streams its weight panels from memory on every token. With 4 KiB pages a
//! stream of ~30 GB/s crosses ~7 million pages a second, each a TLB miss and a page walk, and
//! every page of a fresh buffer is one fault at load. Where transparent huge pages are enabled
//! for regions that ask for them (Linux `madvise` mode, the default of many distributions), a
//! buffer of [`HUGE_FROM`] bytes or more is an anonymous map advised `MADV_HUGEPAGE`; smaller
//! ones, other systems, or a map that fails are a plain `Vec`. Either way it is zeroed memory
//! and only its speed differs.

use std::ops::{Deref, DerefMut};

/// Buffers from this size on are maps that ask for huge pages.
const HUGE_FROM: usize = 4 << 20;

/// A zero-initialized byte buffer, in huge pages where the system gives them.
pub(crate) struct HugeBuf(Inner);

enum Inner {
    Vec(Vec<u8>),
    #[cfg(target_os = "linux")]
    Map(memmap2::MmapMut),
}

impl HugeBuf {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len >= HUGE_FROM
            && let Ok(map) = memmap2::MmapMut::map_anon(len)
        {
            // A refusal (huge pages off) leaves ordinary pages: nothing to handle.
            let _ = map.advise(memmap2::Advice::HugePage);
            return Self(Inner::Map(map));
        }
        Self(Inner::Vec(vec![0u8; len]))
    }
}

impl Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Vec(v) => v,
            #[cfg(target_os = "linux")]
            Inner::Map(m) => m,
        }
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Inner::Vec(v) => v,
            #[cfg(target_os = "linux")]
            Inner::Map(m) => m,
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

    #[test]
    fn small_and_large_buffers_start_zeroed_and_hold_what_is_written() {
        for len in [0, 1, 4095, HUGE_FROM - 1, HUGE_FROM, HUGE_FROM + 12_345] {
            let mut b = HugeBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0), "{len} bytes zeroed");
            for (i, v) in b.iter_mut().enumerate() {
                *v = (i % 251) as u8;
            }
            let c = b.clone();
            assert!(c.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
        }
    }
}
