//! `model::Tokenizer` against the Python `tokenizers` library (tests/fixtures/tokenizer, made by
//! scripts/make_fixtures tokenizer): the same ids for ASCII, accents, CJK, emoji and whitespace
//! runs, with and without the BOS template, and decode(encode(text)) == text; `TextStream`'s
//! pieces concatenate to the full decode and never hold half a character.

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

/// The pieces `TextStream` returns for `ids`, one per id, then `finish`'s rest.
fn stream(tok: &Tokenizer, ids: &[u32]) -> (Vec<String>, String) {
    let mut s = tok.text_stream();
    let pieces = ids.iter().map(|&id| s.push(id).unwrap()).collect();
    (pieces, s.finish().unwrap())
}

#[test]
fn streamed_pieces_concatenate_to_the_decoded_text_without_half_characters() {
    let tok = Tokenizer::from_dir(&dir()).unwrap().unwrap();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap();
    let mut held_back = 0;
    for case in meta["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        // With the BOS template and an <|end_of_text|> after it: special tokens print nothing.
        let mut ids = tok.encode(text, true).unwrap();
        ids.push(1);
        let (pieces, rest) = stream(&tok, &ids);
        assert_eq!(pieces.concat(), text, "{text:?}: pieces {pieces:?}");
        assert_eq!(rest, "", "{text:?}: nothing is left for finish");
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{text:?}: a half character was printed: {pieces:?}");
        // A piece is empty only while a character is split across tokens (or for a special
        // token); each piece is exactly what its token adds to the decoded prefix once whole.
        for (i, p) in pieces.iter().enumerate() {
            let before = tok.decode(&ids[..i]).unwrap();
            let after = tok.decode(&ids[..=i]).unwrap();
            if p.is_empty() && ids[i] > 1 {
                assert!(after.ends_with('\u{FFFD}'), "{text:?}: token {i} held back a whole character");
                held_back += 1;
            }
            if !before.contains('\u{FFFD}') && !after.contains('\u{FFFD}') {
                assert_eq!(format!("{before}{p}"), after, "{text:?}: token {i}");
            }
        }
    }
    assert!(held_back > 0, "the fixture's accents / CJK / emoji must split a character across tokens");
}

#[test]
fn a_stream_cut_inside_a_character_ends_like_decode() {
    let tok = Tokenizer::from_dir(&dir()).unwrap().unwrap();
    let ids = tok.encode("ok 🚀", false).unwrap();
    let whole = stream(&tok, &ids);
    assert_eq!((whole.0.concat(), whole.1.as_str()), ("ok 🚀".to_string(), ""));
    // Without the emoji's last byte token: the bytes so far never print mid-stream; finish
    // gives what decode gives (U+FFFD for the incomplete character).
    let cut = &ids[..ids.len() - 1];
    let (pieces, rest) = stream(&tok, cut);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(format!("{}{rest}", pieces.concat()), tok.decode(cut).unwrap());
    assert!(rest.contains('\u{FFFD}'), "{rest:?}");
}
