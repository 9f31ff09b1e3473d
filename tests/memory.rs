//! The draft memory through the public API: save/load round trips, hostile files, several
//! threads, and decoders that share one memory still returning greedy's tokens.

use msn::{DraftMemory, Error};
use proptest::prelude::*;

fn memory_of(docs: &[Vec<u32>], capacity: usize) -> DraftMemory {
    let m = DraftMemory::new(capacity);
    for d in docs {
        m.add(d);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn save_and_load_round_trip(
        docs in proptest::collection::vec(proptest::collection::vec(0u32..50_000, 0..40), 0..10),
        capacity in 0usize..400,
    ) {
        let m = memory_of(&docs, capacity);
        let bytes = m.to_bytes();
        let back = DraftMemory::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!((back.tokens(), back.documents(), back.capacity()), (m.tokens(), m.documents(), capacity));
    }

    /// Every truncation and any corrupted byte is a typed error or a valid memory, never a panic.
    #[test]
    fn hostile_bytes_are_typed_errors(
        docs in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..10), 1..4),
        cut in 0usize..1000,
        flips in proptest::collection::vec((0usize..1000, any::<u8>()), 0..4),
    ) {
        let bytes = memory_of(&docs, 1000).to_bytes();
        let cut = cut % bytes.len();
        let truncated = DraftMemory::from_bytes(&bytes[..cut]);
        prop_assert!(matches!(truncated, Err(Error::MalformedMemory { .. })), "cut at {}", cut);
        let mut bad = bytes.clone();
        for (at, b) in flips {
            let i = at % bad.len();
            bad[i] = b;
        }
        match DraftMemory::from_bytes(&bad) {
            Ok(m) => prop_assert!(m.tokens() <= m.capacity()),
            Err(e) => {
                let typed = matches!(e, Error::MalformedMemory { .. });
                prop_assert!(typed, "{}", e);
            }
        }
    }
}

#[test]
fn files_that_are_not_memories_say_what_to_do() {
    let dir = std::env::temp_dir().join(format!("msn-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory.bin");
    let m = memory_of(&[vec![1, 2, 3], vec![4, 5]], 100);
    m.save(&path).unwrap();
    assert_eq!(DraftMemory::load(&path).unwrap().to_bytes(), m.to_bytes());
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00 not a memory").unwrap();
    let e = DraftMemory::load(&path).unwrap_err();
    assert!(e.to_string().contains("wrong magic"), "{e}");
    assert!(e.to_string().contains("Delete it"), "{e}");
    // A huge document count in a short file is refused before anything is allocated.
    let mut huge = m.to_bytes();
    huge[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(DraftMemory::from_bytes(&huge).is_err());
    assert!(matches!(
        DraftMemory::load(&dir.join("missing.bin")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn threads_share_one_memory() {
    let m = DraftMemory::new(1 << 20);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let m = m.clone();
            s.spawn(move || {
                for i in 0..50u32 {
                    m.add(&[t, i, t + i, 7, 8, 9]);
                    // Reads interleave with the other threads' writes.
                    let _ = m.to_bytes();
                }
            });
        }
    });
    assert_eq!((m.documents(), m.tokens()), (200, 1200));
}

#[test]
fn a_clone_copies_a_decoders_own_memory_and_shares_a_given_one() {
    let own = msn::TrJacobi::default();
    let copy = own.clone();
    assert!(!copy.memory().unwrap().same_as(own.memory().unwrap()));
    let shared = DraftMemory::default();
    let given = msn::TrJacobi::default().with_memory(shared.clone());
    assert!(given.clone().memory().unwrap().same_as(&shared));
    let suffix = msn::SuffixDecoder::new().with_memory(shared.clone());
    assert!(suffix.clone().memory().same_as(&shared));
    assert!(
        msn::TrJacobi::fixed(Default::default())
            .unwrap()
            .memory()
            .is_none()
    );
    // A snapshot is separate from then on.
    shared.add(&[1, 2, 3]);
    let snap = shared.snapshot();
    shared.add(&[4]);
    assert_eq!((snap.tokens(), shared.tokens()), (3, 4));
}

/// What a full default memory holds in RAM (run by hand: `cargo test --release --features
/// ndarray --test memory -- --ignored --nocapture`): 2^20 tokens of text-like ids (a Zipf-ish mix
/// of 30,000 ids, phrases repeating), resident set before and after.
#[test]
#[ignore]
fn memory_footprint_of_a_full_default_memory() {
    fn rss_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
    let m = DraftMemory::default();
    let before = rss_kib();
    let mut x = 12345u64;
    let mut doc = Vec::with_capacity(400);
    while m.tokens() + 400 <= m.capacity() {
        doc.clear();
        for _ in 0..400 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 33) as f64 / f64::from(1u32 << 31);
            doc.push((30_000.0 * r * r * r) as u32);
        }
        m.add(&doc);
    }
    let after = rss_kib();
    println!(
        "{} tokens in {} documents: {:.0} MiB resident ({:.0} bytes a token)",
        m.tokens(),
        m.documents(),
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / m.tokens() as f64
    );
}
