//! A model id resolved in the local Hugging Face cache, offline, in the layout `huggingface_hub`
//! writes. Its own test binary: it sets `HF_HUB_CACHE` for the process.

mod common;
use common::B;

#[test]
fn a_model_id_loads_from_the_hugging_face_cache_and_a_missing_one_is_a_typed_error() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers_qwen2");
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--Qwen--TinyQwen2");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, snap.join(f.file_name().unwrap())).unwrap();
    }
    // SAFETY: the only test of this binary; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("HF_HUB_CACHE", cache.path()) };
    let by_id = msn::load::<B>("Qwen/TinyQwen2", &Default::default()).unwrap();
    let by_path = msn::load::<B>(fixture.to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(by_id.path, snap);
    assert_eq!(by_id.model.config(), by_path.model.config());
    let e = msn::load::<B>("Qwen/NotDownloaded", &Default::default()).unwrap_err();
    assert!(matches!(e, msn::Error::ModelNotFound { .. }), "{e}");
    assert!(e.to_string().contains("huggingface-cli download"), "{e}");
}
