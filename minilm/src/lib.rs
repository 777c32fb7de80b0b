//! A BERT sentence encoder's forward pass (all-MiniLM-L6-v2 and its kind) on the CPU, in
//! memlog's own code: the matrix products of the linear layers in bf16 with f32 sums (on
//! AVX-512 BF16 that is twice the arithmetic per cycle of f32), everything else in f32.
//! The output is the sentence-transformers vector: mean of the last hidden states over the
//! tokens, L2-normalised.
//!
//! Why its own crate: the arithmetic has to be optimised even in the debug profile (the
//! workspace sets `opt-level = 3` for this package, as for candle), and this is the one
//! place memlog uses `unsafe` (the kernel in `gemm`, behind a run-time CPU check).
//!
//! Sequences are packed, not padded: a batch of texts is one matrix of all their tokens,
//! and only attention looks at where one text ends.
//!
//! # Layout
//!
//! - [`gemm`]: bf16 packing and `C = A·Wᵀ + b`, the AVX-512 BF16 kernel and a portable twin.
//! - `math`: exp, erf/GELU and layer norm, written to vectorise.
//! - this file: [`Config`], [`Model`] (loading safetensors, the forward pass, pooling) and
//!   attention with its softmax, in pulp's vector types.

pub mod gemm;
mod math;

use std::path::{Path, PathBuf};

use gemm::Packed;

/// What can go wrong loading a model. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The parts of a BERT `config.json` the forward pass needs.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

/// One text's tokens: ids and token-type ids of the same length (`[CLS] … [SEP]`).
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value in one product (`n` = 3 × hidden).
    qkv: Packed,
    attn_out: Packed,
    attn_norm: Norm,
    up: Packed,
    down: Packed,
    out_norm: Norm,
}

/// A loaded encoder. `embed` takes `&self` and runs on the calling thread; share one
/// model between threads to run batches in parallel.
pub struct Model {
    config: Config,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    eps: f32,
    /// Work buffers of finished forward passes, reused (one per concurrent caller).
    scratch: std::sync::Mutex<Vec<Scratch>>,
    kernel: gemm::Kernel,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The most tokens a forward pass may have had for its work buffers to be kept for the
/// next; bigger ones are freed. MiniLM's buffers take ~21 KB per token (the 1536-wide
/// hidden layer 6 KB, two pair-word inputs up to 3 KB each, QKV 4.5 KB, and four
/// 384-wide rows), so up to ~90 MB stay per concurrent caller.
const KEEP_TOKENS: usize = 4096;

/// Work buffers of one forward pass, reused across its layers and by later passes. They
/// are resized (`Vec::resize` clears nothing it keeps) but never cleared: every buffer is
/// written in full before it is read.
#[derive(Default)]
struct Scratch {
    /// The hidden states, one row of `hidden_size` per token of every text.
    x: Vec<f32>,
    /// The input of the next matrix product as pair words (see [`gemm::to_pairs`]).
    pairs: Vec<u32>,
    /// Where a product's follow-up writes the next input's pair words (it cannot write
    /// over the input being read); swapped with `pairs` after each product.
    spare: Vec<u32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    product: Vec<f32>,
    hidden: Vec<f32>,
    keys: Vec<f32>,
    scores: Vec<f32>,
    mask: Vec<f32>,
}

impl Model {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Model> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Io { path, source })
        };
        let config_path = dir.join("config.json");
        let config: Config =
            serde_json::from_slice(&read("config.json")?).map_err(|e| Error::Format {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        let weights = read("model.safetensors")?;
        Model::from_safetensors(config, &weights).map_err(|message| Error::Format {
            path: dir.join("model.safetensors"),
            message,
        })
    }

    /// Builds the model from a safetensors file's bytes, with or without the `bert.`
    /// prefix on tensor names.
    pub fn from_safetensors(config: Config, bytes: &[u8]) -> std::result::Result<Model, String> {
        let c = &config;
        let h = c.hidden_size;
        if c.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only gelu)",
                c.hidden_act
            ));
        }
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            return Err(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                c.num_attention_heads
            ));
        }
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let prefix = if st.names().iter().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        let tensor = |name: &str, shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
            let full = format!("{prefix}{name}");
            let t = st.tensor(&full).map_err(|e| format!("{full}: {e}"))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(format!("{full}: dtype {:?}, expected F32", t.dtype()));
            }
            if t.shape() != shape {
                return Err(format!("{full}: shape {:?}, expected {shape:?}", t.shape()));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let norm = |name: &str| -> std::result::Result<Norm, String> {
            Ok(Norm {
                gamma: tensor(&format!("{name}.weight"), &[h])?,
                beta: tensor(&format!("{name}.bias"), &[h])?,
            })
        };
        let linear = |names: &[&str], n: usize, k: usize| -> std::result::Result<Packed, String> {
            let mut w = Vec::with_capacity(names.len() * n * k);
            let mut b = Vec::with_capacity(names.len() * n);
            for name in names {
                w.extend(tensor(&format!("{name}.weight"), &[n, k])?);
                b.extend(tensor(&format!("{name}.bias"), &[n])?);
            }
            let rows = names.len() * n;
            Packed::new(&w, &b, rows, k).ok_or_else(|| {
                format!(
                    "{}: a {rows}×{k} layer; the kernel needs rows in multiples of {} and an \
                     even width",
                    names[0],
                    gemm::NR
                )
            })
        };
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                let at = format!("{p}.attention.self");
                Ok(Layer {
                    qkv: linear(
                        &[
                            &format!("{at}.query"),
                            &format!("{at}.key"),
                            &format!("{at}.value"),
                        ],
                        h,
                        h,
                    )?,
                    attn_out: linear(&[&format!("{p}.attention.output.dense")], h, h)?,
                    attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    up: linear(
                        &[&format!("{p}.intermediate.dense")],
                        c.intermediate_size,
                        h,
                    )?,
                    down: linear(&[&format!("{p}.output.dense")], h, c.intermediate_size)?,
                    out_norm: norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(Model {
            word: tensor("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: tensor(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: tensor(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            embed_norm: norm("embeddings.LayerNorm")?,
            layers,
            eps: c.layer_norm_eps as f32,
            scratch: std::sync::Mutex::new(Vec::new()),
            kernel: gemm::Kernel::best(),
            config,
        })
    }

    /// The model running its products on `kernel` instead of the fastest this CPU has
    /// ([`Kernel::Avx512Bf16`](gemm::Kernel::Avx512Bf16) falls back to the portable code on a
    /// CPU without it). For tests and measurements: both give the same vectors.
    pub fn with_kernel(mut self, kernel: gemm::Kernel) -> Model {
        self.kernel = kernel.or_portable();
        self
    }

    /// What runs the products.
    pub fn kernel(&self) -> gemm::Kernel {
        self.kernel
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The output dimension.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// One L2-normalised vector per text: the mean of the last layer's hidden states over
    /// the text's tokens. An empty token list gives a zero vector.
    ///
    /// # Panics
    /// If a text is longer than `max_position_embeddings`, a token id is outside the
    /// vocabulary or a type id outside `type_vocab_size`, or `ids` and `type_ids` differ
    /// in length: the tokenizer's output never does that.
    pub fn embed(&self, texts: &[Tokens<'_>]) -> Vec<Vec<f32>> {
        let h = self.config.hidden_size;
        for t in texts {
            assert_eq!(
                t.ids.len(),
                t.type_ids.len(),
                "ids and type ids differ in length"
            );
            assert!(
                t.ids.len() <= self.config.max_position_embeddings,
                "a text of {} tokens is longer than the model's {} positions",
                t.ids.len(),
                self.config.max_position_embeddings
            );
        }
        let lens: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        let total: usize = lens.iter().sum();
        let mut s = self
            .scratch
            .lock()
            .map(|mut p| p.pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        let Scratch { x, pairs, .. } = &mut s;
        x.resize(total * h, 0.0);
        pairs.resize(total * h / 2, 0);
        let n = &self.embed_norm;
        math::vectorized(
            #[inline(always)]
            || {
                let mut rows = x.chunks_exact_mut(h).zip(pairs.chunks_exact_mut(h / 2));
                for t in texts {
                    for (pos, (&id, &ty)) in t.ids.iter().zip(t.type_ids).enumerate() {
                        let Some((out, pairs)) = rows.next() else {
                            return;
                        };
                        let word = &self.word[id as usize * h..][..h];
                        let position = &self.position[pos * h..][..h];
                        let ty = &self.token_type[ty as usize * h..][..h];
                        for (((o, w), p), t) in out.iter_mut().zip(word).zip(position).zip(ty) {
                            *o = w + p + t;
                        }
                        math::add_layer_norm(out, None, &n.gamma, &n.beta, self.eps);
                        gemm::pack_row(out, pairs);
                    }
                }
            },
        );
        for layer in &self.layers {
            self.layer(layer, &lens, &mut s);
        }
        let x = &s.x;
        let out = math::vectorized(
            #[inline(always)]
            || {
                let mut out = Vec::with_capacity(texts.len());
                let mut start = 0;
                for &len in &lens {
                    let mut v = vec![0f32; h];
                    for row in x[start * h..(start + len) * h].chunks_exact(h) {
                        for (v, r) in v.iter_mut().zip(row) {
                            *v += r;
                        }
                    }
                    let norm = math::sum(&v, |a| a * a).sqrt();
                    if norm > 0.0 {
                        v.iter_mut().for_each(|a| *a /= norm);
                    }
                    out.push(v);
                    start += len;
                }
                out
            },
        );
        // Keep the buffers for the next call unless a batch of long texts made them big.
        if total <= KEEP_TOKENS
            && let Ok(mut pool) = self.scratch.lock()
        {
            pool.push(s);
        }
        out
    }

    /// One encoder layer over the packed rows `s.x` (texts of `lens` tokens, in order),
    /// whose pair words `s.pairs` already holds; leaves both updated for the next layer.
    ///
    /// What follows each matrix product (residual and norm, GELU, and packing the result
    /// for the next product) runs on each block of rows as the product finishes it, while
    /// the block is in cache.
    fn layer(&self, layer: &Layer, lens: &[usize], s: &mut Scratch) {
        let h = self.config.hidden_size;
        let m = s.x.len() / h;
        let eps = self.eps;
        s.qkv.resize(m * 3 * h, 0.0);
        gemm::matmul(self.kernel, &s.pairs, m, &layer.qkv, &mut s.qkv);

        s.context.resize(m * h, 0.0);
        self.attention(lens, s);
        gemm::to_pairs(&s.context, &mut s.pairs);

        let Scratch {
            x,
            pairs,
            spare,
            product,
            hidden,
            ..
        } = s;
        let mut step = |w: &Packed, out: &mut Vec<f32>, then: &mut FollowUp<'_>| {
            product_then(self.kernel, pairs, spare, m, w, out, then)
        };
        step(
            &layer.attn_out,
            product,
            &mut add_norm(x, &layer.attn_norm, h, eps),
        );
        step(&layer.up, hidden, &mut |_, block, next| {
            math::vectorized(
                #[inline(always)]
                || {
                    math::gelu(block);
                    gemm::pack_row(block, next);
                },
            );
        });
        step(
            &layer.down,
            product,
            &mut add_norm(x, &layer.out_norm, h, eps),
        );
    }

    /// Multi-head self-attention of each text over its own tokens, from `s.qkv` (rows of
    /// query | key | value) into `s.context`, in f32. No mask: nothing is padded.
    fn attention(&self, lens: &[usize], s: &mut Scratch) {
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        pulp::Arch::new().dispatch(Attention {
            qkv: &s.qkv,
            context: &mut s.context,
            keys: &mut s.keys,
            scores: &mut s.scores,
            mask: &mut s.mask,
            lens,
            hidden: h,
            heads,
        });
    }
}

/// What runs on a block of a product's finished rows: `(first row, rows, their share of
/// the next product's input)`.
type FollowUp<'a> = dyn FnMut(usize, &mut [f32], &mut [u32]) + 'a;

/// One matrix product of a layer: `out ← pairs · Wᵀ + b`, then `then(first, rows, next)`
/// on each finished block of rows, `next` being those rows' share of the next product's
/// input, written into `spare`; at the end that input becomes `pairs` (`spare` cannot be
/// `pairs`: the product is still reading rows below the block).
fn product_then(
    kernel: gemm::Kernel,
    pairs: &mut Vec<u32>,
    spare: &mut Vec<u32>,
    m: usize,
    w: &Packed,
    out: &mut Vec<f32>,
    then: &mut FollowUp<'_>,
) {
    let (n, half) = (w.n(), w.n() / 2);
    out.resize(m * n, 0.0);
    spare.resize(m * half, 0);
    gemm::matmul_then(kernel, pairs, m, w, out, |first, block| {
        let rows = block.len() / n;
        then(
            first,
            block,
            &mut spare[first * half..(first + rows) * half],
        );
    });
    std::mem::swap(pairs, spare);
}

/// The follow-up of a product that feeds the residual stream: for a finished block of
/// rows, `x ← norm(x + block)`, and the new rows' pair words into `next`.
fn add_norm<'a>(
    x: &'a mut [f32],
    norm: &'a Norm,
    h: usize,
    eps: f32,
) -> impl FnMut(usize, &mut [f32], &mut [u32]) + 'a {
    move |first, block, next| {
        let x = &mut x[first * h..][..block.len()];
        math::vectorized(
            #[inline(always)]
            || {
                let rows = x.chunks_exact_mut(h).zip(next.chunks_exact_mut(h / 2));
                for ((x, pairs), add) in rows.zip(block.chunks_exact(h)) {
                    math::add_layer_norm(x, Some(add), &norm.gamma, &norm.beta, eps);
                    gemm::pack_row(x, pairs);
                }
            },
        );
    }
}

/// [`Model::attention`]'s arithmetic, written with pulp's vector types so that it is
/// vectorised whatever the compiler's heuristics think (they left the score loop scalar).
///
/// A text's keys are laid out transposed with the token count rounded up to
/// [`PAD`] (zeros beyond the end), so a query's scores are whole-vector multiply-adds of
/// key rows; the scores of the padding are never read.
struct Attention<'a> {
    qkv: &'a [f32],
    context: &'a mut [f32],
    keys: &'a mut Vec<f32>,
    scores: &'a mut Vec<f32>,
    mask: &'a mut Vec<f32>,
    lens: &'a [usize],
    hidden: usize,
    heads: usize,
}

/// A multiple of every vector width pulp dispatches to (16, 8 or 1 f32 lanes).
const PAD: usize = 16;

/// Queries whose scores (and outputs) are computed together.
const Q: usize = 4;

impl pulp::WithSimd for Attention<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Attention {
            qkv,
            context,
            keys,
            scores,
            mask,
            lens,
            hidden: h,
            heads,
        } = self;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut start = 0;
        for &len in lens {
            if len == 0 {
                continue;
            }
            let padded = len.next_multiple_of(PAD);
            let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
            let ctx = &mut context[start * h..(start + len) * h];
            // The padding of both is computed on but never read: no need to clear it.
            keys.resize(h * padded, 0.0);
            scores.resize(len * padded, 0.0);
            // Two rows over the padded width: 1 for a real token and 0 for padding (to
            // zero the padding's exponentials), then 0 and -∞ (to keep it out of the max).
            mask.resize(2 * padded, 0.0);
            for (j, m) in mask.iter_mut().enumerate() {
                *m = match (j < padded, j % padded < len) {
                    (true, real) => f32::from(u8::from(real)),
                    (false, true) => 0.0,
                    (false, false) => f32::NEG_INFINITY,
                };
            }
            // All heads' keys transposed at once: row `e` holds key element `e` of every
            // token (contiguous writes; the strided reads stay in cache).
            for (e, out) in keys.chunks_exact_mut(padded).enumerate() {
                let (real, padding) = out.split_at_mut(len);
                for (o, row) in real.iter_mut().zip(rows.chunks_exact(3 * h)) {
                    *o = row[h + e];
                }
                // Zero keys give the padding exact zero scores (never read, but never
                // anything that could overflow either).
                padding.fill(0.0);
            }
            for head in 0..heads {
                let keys = &keys[head * d * padded..][..d * padded];
                // Scores, `Q` queries at a time: each key vector loaded once feeds `Q`
                // independent multiply-add chains.
                for i0 in (0..len).step_by(Q) {
                    let n = (len - i0).min(Q);
                    // Rows past the text's end repeat its last query (so every block has
                    // `Q` rows and the loops unroll); their results are not stored.
                    let q: [&[f32]; Q] = std::array::from_fn(|r| {
                        let i = (i0 + r).min(len - 1);
                        &rows[i * 3 * h + head * d..][..d]
                    });
                    for c in 0..padded / S::F32_LANES {
                        let mut acc = [simd.splat_f32s(0.0); Q];
                        for k in 0..d {
                            let (key, _) = S::as_simd_f32s(&keys[k * padded..][..padded]);
                            let kv = key[c];
                            for r in 0..Q {
                                let qv = simd.splat_f32s(q[r][k]);
                                acc[r] = simd.mul_add_f32s(qv, kv, acc[r]);
                            }
                        }
                        for (r, acc) in acc.iter().enumerate().take(n) {
                            let row = &mut scores[(i0 + r) * padded..][..padded];
                            let (row, _) = S::as_mut_simd_f32s(row);
                            row[c] = simd.mul_f32s(*acc, simd.splat_f32s(scale));
                        }
                    }
                }
                // Softmax of each row over its `len` real scores, in whole vectors: the
                // padding is -∞ for the maximum and 0 after the exponential.
                let (keep, _) = S::as_simd_f32s(mask);
                let (hide, _) = S::as_simd_f32s(&mask[padded..]);
                for row in scores.chunks_exact_mut(padded) {
                    let (v, _) = S::as_simd_f32s(row);
                    let max = v
                        .iter()
                        .zip(hide)
                        .fold(simd.splat_f32s(f32::NEG_INFINITY), |m, (&x, &hide)| {
                            simd.max_f32s(m, simd.add_f32s(x, hide))
                        });
                    math::exp_minus(row, simd.reduce_max_f32s(max));
                    let (v, _) = S::as_mut_simd_f32s(row);
                    let mut sum = simd.splat_f32s(0.0);
                    for (x, &keep) in v.iter_mut().zip(keep) {
                        *x = simd.mul_f32s(*x, keep);
                        sum = simd.add_f32s(sum, *x);
                    }
                    let inv = simd.splat_f32s(1.0 / simd.reduce_sum_f32s(sum));
                    for x in v {
                        *x = simd.mul_f32s(*x, inv);
                    }
                }
                // The output, `Q` queries at a time likewise.
                let whole = d - d % S::F32_LANES;
                for i0 in (0..len).step_by(Q) {
                    let n = (len - i0).min(Q);
                    let p: [&[f32]; Q] = std::array::from_fn(|r| {
                        let i = (i0 + r).min(len - 1);
                        &scores[i * padded..][..len]
                    });
                    for c in 0..whole / S::F32_LANES {
                        let mut acc = [simd.splat_f32s(0.0); Q];
                        for (j, vrow) in rows.chunks_exact(3 * h).enumerate() {
                            let (v, _) = S::as_simd_f32s(&vrow[2 * h + head * d..][..d]);
                            let vv = v[c];
                            for r in 0..Q {
                                acc[r] = simd.mul_add_f32s(simd.splat_f32s(p[r][j]), vv, acc[r]);
                            }
                        }
                        for (r, acc) in acc.iter().enumerate().take(n) {
                            let out = &mut ctx[(i0 + r) * h + head * d..][..d];
                            let (out, _) = S::as_mut_simd_f32s(out);
                            out[c] = *acc;
                        }
                    }
                    for (r, p) in p.iter().enumerate().take(n) {
                        for t in whole..d {
                            ctx[(i0 + r) * h + head * d + t] = rows
                                .chunks_exact(3 * h)
                                .zip(p.iter())
                                .map(|(vrow, &p)| p * vrow[2 * h + head * d + t])
                                .sum();
                        }
                    }
                }
            }
            start += len;
        }
    }
}
