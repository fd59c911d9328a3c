//! `model::Tokenizer` against the Python `tokenizers` library (tests/fixtures/tokenizer, made by
//! scripts/make_fixtures tokenizer): the same ids for ASCII, accents, CJK, emoji and whitespace
//! runs, with and without the BOS template, and decode(encode(text)) == text.

use std::path::PathBuf;
use warpcore::model::Tokenizer;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

#[test]
fn ids_match_the_python_tokenizers_library() {
    let tok = Tokenizer::from_dir(&dir()).unwrap().expect("tokenizer.json is in the fixture");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let plain = tok.encode(text, false).unwrap();
        assert_eq!(plain, ids(&case["ids"]), "{text:?}");
        assert_eq!(tok.encode(text, true).unwrap(), ids(&case["ids_with_special"]), "{text:?} with the BOS template");
        assert_eq!(tok.decode(&plain).unwrap(), case["decoded"].as_str().unwrap(), "{text:?} decoded");
        assert_eq!(tok.decode(&plain).unwrap(), text, "byte-level BPE round-trips {text:?}");
    }
}

#[test]
fn a_folder_without_tokenizer_json_has_none_and_a_broken_one_is_an_error() {
    let fixtures = dir().join("..");
    assert!(Tokenizer::from_dir(&fixtures.join("llama")).unwrap().is_none());
    let broken = std::env::temp_dir().join(format!("warpcore-tok-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("tokenizer.json"), "{not json").unwrap();
    let e = Tokenizer::from_dir(&broken).err().expect("a broken tokenizer.json must fail");
    std::fs::remove_dir_all(&broken).ok();
    assert!(matches!(e, warpcore::Error::Load { .. }), "{e}");
}
