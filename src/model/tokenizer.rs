//! Text in and out: a model folder's `tokenizer.json` through the `tokenizers` crate (the Rust
//! library behind Hugging Face's tokenizers, so ids match what transformers produces). The
//! model itself works on token ids; this is only the CLI's `--prompt TEXT` convenience.

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
}
