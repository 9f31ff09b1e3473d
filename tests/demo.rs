//! The demo model's cache: the library reads it and checks its sha256 but never downloads it
//! (the examples and tests fetch it with pip, `examples/common/demo_model.rs`). One test in its
//! own binary: it changes this process's environment.

mod common;
use common::B;
use msn::Error;

#[test]
fn the_library_reads_the_demo_model_from_its_cache_and_never_downloads_it() {
    let real = common::demo_model::ensure().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this binary; nothing else reads the environment meanwhile.
    unsafe {
        std::env::set_var("MSN_CACHE_DIR", cache.path());
        std::env::remove_var("MSN_SMOLLM2_GGUF");
    }
    assert_eq!(msn::demo::cache_dir(), cache.path());
    // An empty cache: nothing found, and loading says how to get the file.
    assert!(msn::demo::cached().unwrap().is_none());
    let err = msn::load::<B>("smollm2", &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::Fetch(ref m) if m.contains("example") && m.contains("MSN_SMOLLM2_GGUF")),
        "{err}"
    );
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "nothing written"
    );
    // A wrong file is refused and left where it was.
    let wrong = cache.path().join("wrong.gguf");
    std::fs::write(&wrong, b"GGUF not the model").unwrap();
    assert!(matches!(
        msn::demo::install(&wrong),
        Err(Error::Checksum { .. })
    ));
    assert!(wrong.exists());
    unsafe { std::env::set_var("MSN_SMOLLM2_GGUF", &wrong) };
    assert!(matches!(msn::demo::cached(), Err(Error::Checksum { .. })));
    unsafe { std::env::remove_var("MSN_SMOLLM2_GGUF") };
    // A verified copy is installed into the cache, where loading finds it.
    let copy = cache.path().join("copy.gguf");
    std::fs::copy(&real, &copy).unwrap();
    let installed = msn::demo::install(&copy).unwrap();
    assert_eq!(installed, cache.path().join(msn::demo::SMOLLM2_FILE));
    assert_eq!(msn::demo::cached().unwrap(), Some(installed.clone()));
    let m = msn::load::<B>("smollm2", &Default::default()).unwrap();
    assert_eq!(m.path, installed);
}
