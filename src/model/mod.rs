//! The thin reference model: Hugging Face checkpoints on a CPU oracle path (built only from
//! `crate::reference` functions) and a GPU path (warpcore's kernels + cuBLAS, gpu/).

pub mod config;
pub mod cpu;
pub mod gemm;
pub mod gpu;
pub mod sampling;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;
pub mod weights;

pub use config::{Architecture, BitLinearClass, BitNetQuant, MlaConfig, ModelConfig, MoeConfig};
pub use cpu::CpuModel;
pub use gpu::{Batch, GpuModel};
pub use sampling::{is_finished, Sampler, Sampling};
#[cfg(feature = "tokenizer")]
pub use tokenizer::{TextStream, Tokenizer};
pub use weights::Weights;
