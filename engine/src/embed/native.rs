//! all-MiniLM-L6-v2 on memlog's own forward pass (`memlog-minilm`): matrix products in
//! bf16 with f32 sums, everything else in f32, texts packed without padding. On a CPU
//! with AVX-512 BF16 it is the fastest runtime with the model's own vectors (cosine ≥
//! 0.9999 to sentence-transformers, tested like the others); elsewhere the same arithmetic
//! runs in portable code, correct but slower than ONNX Runtime.

use std::path::{Path, PathBuf};

use memlog_minilm::{Model, Tokens};
use tokenizers::Tokenizer;

use super::Embedder;
use super::minilm::{embed_sorted, load_tokenizer};
use crate::{Error, Result};

/// Texts per forward pass. Packing wastes nothing on padding, so the batch only bounds the
/// work buffers (all tokens × 1536 floats).
const BATCH: usize = 64;

/// all-MiniLM-L6-v2 on `memlog-minilm`. `embed` splits its batches over `threads` threads
/// (scoped, per call); each batch runs on one core.
pub struct NativeMiniLm {
    model: Model,
    tokenizer: Tokenizer,
    dir: PathBuf,
    threads: usize,
}

impl NativeMiniLm {
    /// Whether this CPU runs the bf16 kernel (AVX-512 BF16); without it the portable code
    /// computes the same vectors several times slower.
    pub fn accelerated() -> bool {
        memlog_minilm::gemm::Kernel::best() != memlog_minilm::gemm::Kernel::Portable
    }

    /// Loads the model in `dir` (the files of [`super::MODEL_FILES`]), to run on `threads`
    /// threads.
    pub fn load(dir: &Path, threads: usize) -> Result<NativeMiniLm> {
        let model = Model::load(dir).map_err(|e| match e {
            memlog_minilm::Error::Io { path, source } => Error::Embed {
                path,
                message: source.to_string(),
            },
            memlog_minilm::Error::Format { path, message } => Error::Embed { path, message },
            other => Error::Embed {
                path: dir.to_path_buf(),
                message: other.to_string(),
            },
        })?;
        let (tokenizer, _) = load_tokenizer(dir, model.config().max_position_embeddings)?;
        Ok(NativeMiniLm {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            threads: threads.max(1),
        })
    }

    fn forward(&self, encodings: &[&tokenizers::Encoding]) -> Vec<Vec<f32>> {
        let tokens: Vec<Tokens<'_>> = encodings
            .iter()
            .map(|e| Tokens {
                ids: e.get_ids(),
                type_ids: e.get_type_ids(),
            })
            .collect();
        self.model.embed(&tokens)
    }
}

impl std::fmt::Debug for NativeMiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeMiniLm")
            .field("dir", &self.dir)
            .field("threads", &self.threads)
            .field("kernel", &self.model.kernel())
            .finish_non_exhaustive()
    }
}

impl Embedder for NativeMiniLm {
    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn name(&self) -> &str {
        super::MiniLm::NAME
    }

    fn runtime(&self) -> &str {
        match self.model.kernel() {
            memlog_minilm::gemm::Kernel::Avx512Bf16 => "memlog bf16 (AVX-512 BF16)",
            memlog_minilm::gemm::Kernel::Portable => "memlog bf16 (portable)",
        }
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Split so that every thread gets work, but never into batches smaller than needed.
        let per_thread = texts.len().div_ceil(self.threads);
        let batch = per_thread.clamp(1, BATCH);
        if self.threads == 1 || texts.len() <= batch {
            return embed_sorted(&self.tokenizer, texts, batch, |b| Ok(self.forward(b)));
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        embed_sorted(&self.tokenizer, chunk, batch, |b| Ok(self.forward(b)))
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(texts.len());
            for h in handles {
                let part = h.join().map_err(|_| Error::Embed {
                    path: self.dir.clone(),
                    message: "an embedding thread panicked".into(),
                })??;
                out.extend(part);
            }
            Ok(out)
        })
    }
}
