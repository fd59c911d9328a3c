//! Weights: every `*.safetensors` file of a model folder, memory-mapped, read by name into
//! f32 for the CPU path (its large matrices kept in 16 bits where the checkpoint has them:
//! `Matrix`): from f32, bf16 or f16 storage, or from FP8 e4m3 with a `<name>_scale_inv` tensor
//! beside it (DeepSeek-V3's block FP8: one f32 scale per 128 × 128 block, value = fp8 ·
//! scale_inv), dequantized by `reference::quant`; packed codes (BitNet's ternary weights) as u8.

use crate::kv_cache::KvScales;
use crate::ops::quant::ScaleGranularity;
use crate::reference::quant::Quantized;
use crate::{Error, Result, F8E4M3};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A block-FP8 weight as stored: e4m3 codes `[rows, cols]` and one f32 scale per 128 × 128
/// block (`[ceil(rows/128), ceil(cols/128)]`, row-major; value = code · scale).
pub struct BlockFp8 {
    /// The e4m3 codes `[rows, cols]`, row-major.
    pub codes: Vec<F8E4M3>,
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// One scale per 128 × 128 block `[ceil(rows/128), ceil(cols/128)]`, row-major.
    pub scale: Vec<f32>,
}

/// A weight matrix for the CPU path, row-major: f32, bf16 and f16 checkpoints' tensors kept in
/// their own type (every value is exactly an f64 either way; 16-bit storage halves the memory
/// and the bytes a token streams), anything else (FP8 blocks) dequantized to f32.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Matrix {
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
    F16(Vec<half::f16>),
}

impl Matrix {
    /// `x · selfᵀ (+ bias)` for x `[m, k]` and self `[n, k]` (`reference::linear`).
    pub(crate) fn linear(&self, x: &[f32], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
        use crate::reference::linear::linear;
        match self {
            Self::F32(w) => linear(x, w, bias, k),
            Self::Bf16(w) => linear(x, w, bias, k),
            Self::F16(w) => linear(x, w, bias, k),
        }
    }

    /// Elements [start, end) as f32 (e.g. an embedding row).
    pub(crate) fn to_f32(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        match self {
            Self::F32(w) => w[range].to_vec(),
            Self::Bf16(w) => w[range].iter().map(|v| v.to_f32()).collect(),
            Self::F16(w) => w[range].iter().map(|v| v.to_f32()).collect(),
        }
    }

    /// Elements [start, end) as a matrix of their own.
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            Self::F32(w) => Self::F32(w[range].to_vec()),
            Self::Bf16(w) => Self::Bf16(w[range].to_vec()),
            Self::F16(w) => Self::F16(w[range].to_vec()),
        }
    }
}

/// The tensors of a model folder. Files stay mapped for the lifetime of the value.
pub struct Weights {
    maps: Vec<(PathBuf, Mmap)>,
    /// Tensor name → index into `maps`.
    index: HashMap<String, usize>,
}

fn load_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Load { path: path.display().to_string(), reason: reason.to_string() }
}

impl Weights {
    /// Maps every `*.safetensors` file in `dir` (sorted by name) and indexes their tensors.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| load_err(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(load_err(dir, "no *.safetensors file"));
        }
        Self::open_files(&files)
    }

    /// Maps the given safetensors files; a name in several files resolves to the last.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for path in files.iter().cloned() {
            let file = File::open(&path).map_err(|e| load_err(&path, e))?;
            // SAFETY: the file is opened read-only and not modified while mapped (a model
            // folder is not written by this process; a concurrent writer is the user's error).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| load_err(&path, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| load_err(&path, e))?;
            for name in st.names() {
                index.insert(name.to_string(), maps.len());
            }
            maps.push((path, map));
        }
        Ok(Self { maps, index })
    }

    /// True when the folder has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Runs `f` on the tensor `name` (with its file's path); `Error::MissingTensor` when absent.
    fn with_tensor<R>(&self, name: &str, f: impl FnOnce(&Path, safetensors::tensor::TensorView<'_>) -> Result<R>) -> Result<R> {
        let &i = self.index.get(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).map_err(|e| load_err(path, e))?;
        f(path, st.tensor(name).map_err(|e| load_err(path, e))?)
    }

    /// The tensor `name` as f32 with its shape; `Error::MissingTensor` names it when absent.
    pub fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.with_tensor(name, |path, t| {
            let bytes = t.data();
            let data: Vec<f32> = match t.dtype() {
                Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::F8_E4M3 => self.dequantize_block_fp8(name, t.shape())?,
                other => return Err(load_err(path, format!("tensor {name}: dtype {other:?} is not f32, bf16, f16 or e4m3 with block scales"))),
            };
            Ok((data, t.shape().to_vec()))
        })
    }

    /// The u8 tensor `name` (packed codes, e.g. BitNet's ternary weights) with its shape.
    pub fn get_u8(&self, name: &str) -> Result<(Vec<u8>, Vec<usize>)> {
        self.with_tensor(name, |path, t| match t.dtype() {
            Dtype::U8 => Ok((t.data().to_vec(), t.shape().to_vec())),
            other => Err(load_err(path, format!("tensor {name}: dtype {other:?} is not u8"))),
        })
    }

    /// True when `name` is stored as e4m3 (an FP8 block weight; `Error::MissingTensor` when absent).
    pub fn is_e4m3(&self, name: &str) -> Result<bool> {
        self.with_tensor(name, |_, t| Ok(t.dtype() == Dtype::F8_E4M3))
    }

    /// The e4m3 codes of `name` (`[rows, cols]`, as stored) and its `<name>_scale_inv`
    /// (`[ceil(rows/128), ceil(cols/128)]`, f32) for a GPU path that keeps FP8 weights; None when
    /// `name` is stored in another dtype.
    pub fn get_block_fp8(&self, name: &str) -> Result<Option<BlockFp8>> {
        let codes = self.with_tensor(name, |_, t| {
            Ok(match (t.dtype(), t.shape()) {
                (Dtype::F8_E4M3, &[rows, cols]) => Some((t.data().iter().map(|&b| F8E4M3(b)).collect::<Vec<_>>(), [rows, cols])),
                _ => None,
            })
        })?;
        let Some((codes, shape)) = codes else { return Ok(None) };
        let scale_name = format!("{name}_scale_inv");
        let want = ScaleGranularity::Block128.scale_shape(shape[0], shape[1]);
        let scale = self.get_shaped(&scale_name, &want)?;
        Ok(Some(BlockFp8 { codes, shape, scale }))
    }

    /// A 2-D e4m3 tensor ([`Weights::get_block_fp8`]) as f32: each value is exact in f64 and
    /// rounded once, like transformers' f32 dequantization.
    fn dequantize_block_fp8(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some(b) = self.get_block_fp8(name)? else {
            return Err(Error::Unsupported { op: "Weights::get", what: "e4m3 tensor rank (2, with block scales)", value: format!("{name}: {shape:?}") });
        };
        let [rows, cols] = b.shape;
        let scale_shape = ScaleGranularity::Block128.scale_shape(rows, cols);
        let q = Quantized::from_parts(rows, cols, ScaleGranularity::Block128, b.codes, b.scale, scale_shape)?;
        Ok(q.dequantize().into_iter().map(|v| v as f32).collect())
    }

    /// The FP8 KV cache scales a checkpoint carries, one pair per layer, as llm-compressor /
    /// compressed-tensors write them and vLLM reads them: scalars `model.layers.{l}.self_attn.
    /// k_scale` and `v_scale`, or the older single `kv_scale` for both (x ≈ stored · scale).
    /// None when no layer has any; `Error::MissingTensor` names the first one missing when only
    /// some layers do.
    pub fn kv_scales(&self, num_layers: usize) -> Result<Option<Vec<KvScales>>> {
        let at = |l: usize, n: &str| format!("model.layers.{l}.self_attn.{n}");
        let any = (0..num_layers).any(|l| ["k_scale", "v_scale", "kv_scale"].iter().any(|n| self.contains(&at(l, n))));
        if !any {
            return Ok(None);
        }
        let scalar = |name: String| -> Result<f32> {
            let (v, shape) = self.get(&name)?;
            match v[..] {
                [x] => Ok(x),
                _ => Err(Error::Unsupported { op: "Weights::kv_scales", what: "KV cache scale (a scalar)", value: format!("{name}: {shape:?}") }),
            }
        };
        (0..num_layers)
            .map(|l| {
                if self.contains(&at(l, "kv_scale")) && !self.contains(&at(l, "k_scale")) {
                    let s = scalar(at(l, "kv_scale"))?;
                    Ok(KvScales::new(s, s))
                } else {
                    Ok(KvScales::new(scalar(at(l, "k_scale"))?, scalar(at(l, "v_scale"))?))
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The tensor `name` of `shape` as a [`Matrix`]: f32, bf16 and f16 as stored, others as
    /// [`Weights::get`] reads them.
    pub(crate) fn get_matrix(&self, name: &str, shape: &[usize]) -> Result<Matrix> {
        let stored = self.with_tensor(name, |_, t| {
            if t.shape() != shape {
                return Ok(None);
            }
            let halves = |b: &[u8]| b.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect::<Vec<_>>();
            Ok(match t.dtype() {
                Dtype::BF16 => Some(Matrix::Bf16(halves(t.data()).into_iter().map(half::bf16::from_bits).collect())),
                Dtype::F16 => Some(Matrix::F16(halves(t.data()).into_iter().map(half::f16::from_bits).collect())),
                _ => None,
            })
        })?;
        match stored {
            Some(m) => Ok(m),
            None => Ok(Matrix::F32(self.get_shaped(name, shape)?)), // f32, FP8, or the shape error
        }
    }

    /// The tensor `name`, which must have shape `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (data, got) = self.get(name)?;
        if got != shape {
            return Err(Error::ShapeMismatch { op: "Weights::get", arg: "tensor", expected: format!("{name}: {shape:?}"), got: format!("{got:?}") });
        }
        Ok(data)
    }
}
