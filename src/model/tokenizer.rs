//! Text in and out: a model folder's `tokenizer.json` through the `tokenizers` crate (the Rust
//! library behind Hugging Face's tokenizers, so ids match what transformers produces). The
//! model itself works on token ids; this is only the CLI's `--prompt TEXT` convenience, and
//! [`TextStream`] prints a generation's text as its tokens arrive.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`; `Ok(None)` when the folder has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        Self::from_file(&path).map(Some)
    }

    /// Loads a tokenizer.json file; [`Error::Load`] when it cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Load { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(Self { inner, path: path.to_path_buf() })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Load { path: self.path.display().to_string(), reason: e.to_string() }
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's template (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, add_special_tokens).map_err(|e| self.err(e))?.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.err(e))
    }

    /// An incremental decoder for one sequence's generated ids.
    pub fn text_stream(&self) -> TextStream<'_> {
        TextStream { tokenizer: self, stream: self.inner.decode_stream(true), ids: Vec::new(), text: String::new() }
    }
}

type DecodeStream<'a> = tokenizers::DecodeStream<
    'a,
    tokenizers::ModelWrapper,
    tokenizers::NormalizerWrapper,
    tokenizers::PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// One sequence's text, piece by piece as its tokens arrive: [`TextStream::push`] returns the
/// text the new token completes ("" while a character split across byte-level tokens is still
/// incomplete: never a U+FFFD for a character a later token finishes), [`TextStream::finish`]
/// whatever is left. The pieces concatenate to [`Tokenizer::decode`] of all the ids.
///
/// `tokenizers`' `DecodeStream` does the work, decoding a short window of recent ids (not the
/// whole sequence each step); the ids and the text so far are kept only for `finish`.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    stream: DecodeStream<'a>,
    ids: Vec<u32>,
    /// What `push` has returned so far.
    text: String,
}

impl TextStream<'_> {
    /// The new text that `id` completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let piece = self.stream.step(id).map_err(|e| self.tokenizer.err(e))?.unwrap_or_default();
        self.text.push_str(&piece);
        Ok(piece)
    }

    /// The rest of the text: what the ids decode to beyond the pieces already returned (a
    /// character the last ids left incomplete comes out here, as U+FFFD, as in `decode`).
    pub fn finish(self) -> Result<String> {
        let full = self.tokenizer.decode(&self.ids)?;
        match full.strip_prefix(self.text.as_str()) {
            Some(rest) => Ok(rest.to_string()),
            None => Err(self.tokenizer.err(format!("streamed text {:?} is not a prefix of the decoded text {full:?}", self.text))),
        }
    }
}
