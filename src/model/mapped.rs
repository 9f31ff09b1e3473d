//! Read-only file maps and their pages in this process's memory.
//!
//! Checkpoints are mapped read-only and shared with their files (`memmap2::Mmap`). Pages a load
//! has read count in the process's resident memory until it unmaps them; once the host engine
//! holds its own copy of a tensor, [`release`] drops them, so a load never holds a file and the
//! copies made from it at once. A later read of a released page faults the file's contents in
//! again, so releasing loses nothing.

/// Drops the whole pages inside `range` of `map` from this process's resident memory
/// (`madvise(MADV_DONTNEED)` on Unix; nothing elsewhere). Failure only leaves them resident.
pub(crate) fn release(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let base = map.as_ptr() as usize;
        let end = range.end.min(map.len());
        let start = (base + range.start).next_multiple_of(PAGE) - base;
        let end = ((base + end) / PAGE * PAGE).saturating_sub(base);
        if end > start {
            // SAFETY: the map is read-only and shared with its file: dropping pages changes no
            // value any reader sees (a later read faults the same contents in from the file),
            // and the range lies inside the map. (memmap2 marks DONTNEED unsafe for writable
            // private maps, whose changes it would discard; this map has none.)
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}
