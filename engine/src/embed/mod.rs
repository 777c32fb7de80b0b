//! Text embedders: turn texts into fixed-size vectors for semantic retrieval.
//!
//! - [`NativeMiniLm`]: all-MiniLM-L6-v2 (384-d) on memlog's own forward pass
//!   (`memlog-minilm`: bf16 matrix products, f32 elsewhere), the same vectors to cosine ≥
//!   0.9999. The default on CPUs with AVX-512 BF16, where it is the fastest.
//! - [`MiniLm`]: the same model run in-process with candle, loaded from local files. The
//!   default on other CPUs when ONNX Runtime's graph has not been built.
//! - `OnnxMiniLm` (feature `onnx`): the same model on ONNX Runtime, in f32 (same vectors,
//!   about 3x faster) or int8 (faster again, cosine ~0.99: its own embedding space).
//! - [`Hashing`]: feature hashing of words and word pairs. Deterministic and free, but not
//!   semantic: for tests, and the fallback when no model is present.
//!
//! The model is never downloaded here (the engine does no network I/O); [`find_model`]
//! only looks in the places a user or installer puts it.

mod hashing;
mod minilm;
mod native;
#[cfg(feature = "onnx")]
pub mod onnx;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use hashing::Hashing;
pub(crate) use hashing::fnv1a;
pub use minilm::MiniLm;
pub use native::NativeMiniLm;
#[cfg(feature = "onnx")]
pub use onnx::{OnnxMiniLm, Precision};

/// Turns texts into vectors whose dot product measures how alike the texts are.
///
/// Contract, for every implementation:
///
/// - `embed(texts)` returns exactly one vector per input, in input order, each of length
///   [`dim`](Embedder::dim). An empty input gives an empty output.
/// - Every vector is L2-normalised (length 1 within f32 rounding), so cosine similarity is
///   the dot product. Empty or punctuation-only texts get a unit vector too.
/// - Deterministic: the same text gives the same vector (up to float rounding of batched
///   arithmetic, well within cosine 0.9999), whatever else is in the batch and however
///   often it is asked. Vectors from different embedders (different [`name`](Embedder::name))
///   are not comparable and must not be mixed in one index.
/// - Synchronous and CPU-bound: async callers run it on a blocking thread.
pub trait Embedder: Send + Sync {
    /// The length of every vector this embedder returns.
    fn dim(&self) -> usize;

    /// A stable name for the embedding space, recorded next to stored vectors so an index
    /// built by one embedder is never queried with another.
    fn name(&self) -> &str;

    /// Embeds `texts`, one vector per text, in order. See the trait docs for the contract.
    fn embed(&self, texts: &[&str]) -> crate::Result<Vec<Vec<f32>>>;

    /// What computes the vectors, for reports and logs (`candle`, `ONNX Runtime f32`, …);
    /// two runtimes of one [`name`](Embedder::name) give the same vectors.
    fn runtime(&self) -> &str {
        "in-process"
    }

    /// Whether embedding a query costs microseconds (no model runs), so that a server may
    /// embed on the thread that handles the request instead of handing the call off.
    fn is_instant(&self) -> bool {
        false
    }
}

/// The environment variable that picks how MiniLM runs: `auto` (the default: memlog's
/// own bf16 forward pass on a CPU with AVX-512 BF16, else ONNX Runtime in f32 when
/// `memlog model fetch --onnx` has built its graph, else candle), `native` (memlog's own,
/// on any CPU), `candle`, `onnx` or `onnx-int8` (faster, but its vectors are a space of
/// their own: cosine ~0.99 to f32).
pub const RUNTIME_ENV: &str = "MEMLOG_EMBED_RUNTIME";

/// Loads all-MiniLM-L6-v2 if a model directory is found (on the runtime
/// [`RUNTIME_ENV`] asks for), else the hashing embedder — and says so loudly,
/// because retrieval is then lexical, not semantic.
pub fn load(explicit: Option<&Path>) -> (Arc<dyn Embedder>, Option<PathBuf>) {
    let runtime = std::env::var(RUNTIME_ENV).unwrap_or_default();
    match find_model(explicit) {
        Some(dir) => {
            if let Some(m) = load_native(&dir, runtime.trim()) {
                return (m, Some(dir));
            }
            if let Some(m) = load_onnx(&dir, runtime.trim()) {
                return (m, Some(dir));
            }
            match MiniLm::load(&dir) {
                Ok(m) => {
                    tracing::info!(model = %dir.display(), "embeddings: all-MiniLM-L6-v2 on the CPU (candle)");
                    return (Arc::new(m), Some(dir));
                }
                Err(e) => tracing::warn!(
                    model = %dir.display(),
                    "THE EMBEDDING MODEL FAILED TO LOAD ({e}); falling back to the hashing embedder, which is NOT semantic"
                ),
            }
        }
        None => tracing::warn!(
            "NO EMBEDDING MODEL FOUND: falling back to the hashing embedder, which is NOT \
             semantic. Run `memlog model fetch` (or pass --embed-model DIR) and restart."
        ),
    }
    (Arc::new(Hashing::default()), None)
}

/// memlog's own forward pass if `runtime` asks for it (`native`) or leaves the choice
/// (`auto`) on a CPU where it is the fastest; `None` means another runtime.
fn load_native(dir: &Path, runtime: &str) -> Option<Arc<dyn Embedder>> {
    match runtime {
        "" | "auto" if NativeMiniLm::accelerated() => {}
        "native" => {}
        _ => return None,
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match NativeMiniLm::load(dir, threads) {
        Ok(m) => {
            tracing::info!(
                model = %dir.display(),
                runtime = m.runtime(),
                "embeddings: all-MiniLM-L6-v2 on memlog's own forward pass"
            );
            Some(Arc::new(m))
        }
        Err(e) => {
            tracing::warn!(model = %dir.display(), "memlog's MiniLM failed to load ({e}); trying another runtime");
            None
        }
    }
}

/// The ONNX Runtime embedder `runtime` asks for, if it can run; `None` means candle.
#[cfg(feature = "onnx")]
fn load_onnx(dir: &Path, runtime: &str) -> Option<Arc<dyn Embedder>> {
    use onnx::available;
    let precision = match runtime {
        "" | "auto" if available(dir, Precision::F32) => Precision::F32,
        "" | "auto" | "candle" | "native" => return None,
        "onnx" => Precision::F32,
        "onnx-int8" => Precision::Int8,
        other => {
            tracing::warn!(
                "{RUNTIME_ENV}={other} is not one of auto, native, candle, onnx, onnx-int8: using candle"
            );
            return None;
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match OnnxMiniLm::load(dir, precision, threads) {
        Ok(m) => {
            tracing::info!(model = %dir.display(), ?precision, "embeddings: all-MiniLM-L6-v2 on ONNX Runtime");
            Some(Arc::new(m))
        }
        Err(e) => {
            tracing::warn!(model = %dir.display(), "ONNX Runtime embedder unavailable ({e}); using candle");
            None
        }
    }
}

/// Without the `onnx` feature every runtime is candle.
#[cfg(not(feature = "onnx"))]
fn load_onnx(_dir: &Path, runtime: &str) -> Option<Arc<dyn Embedder>> {
    if !matches!(runtime, "" | "auto" | "candle" | "native") {
        tracing::warn!("{RUNTIME_ENV}={runtime}: this build has no ONNX Runtime; using candle");
    }
    None
}

/// The folder name of the default model inside the model cache.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// The environment variable that names a model directory.
pub const MODEL_ENV: &str = "MEMLOG_EMBED_MODEL";

/// The files a model directory must hold; [`MiniLm::load`] reads all three.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Finds a complete model directory (one holding all of [`MODEL_FILES`]).
///
/// Looks, in order, at `explicit`, the directory named by `$MEMLOG_EMBED_MODEL`, then the
/// model cache `$XDG_CACHE_HOME/memlog/models/all-MiniLM-L6-v2` (or
/// `$HOME/.cache/memlog/models/all-MiniLM-L6-v2` when `XDG_CACHE_HOME` is unset). A
/// candidate that is named but incomplete is skipped with a warning that says which file
/// is missing; `None` means no candidate is complete, and the caller falls back to
/// [`Hashing`] (and says so).
pub fn find_model(explicit: Option<&Path>) -> Option<PathBuf> {
    find_model_in(
        explicit,
        std::env::var_os(MODEL_ENV),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// Where `memlog model fetch` puts the default model and [`find_model`] looks last:
/// `$XDG_CACHE_HOME/memlog/models/all-MiniLM-L6-v2`, or under `$HOME/.cache` when
/// `XDG_CACHE_HOME` is unset. `None` when neither variable is set.
pub fn default_model_dir() -> Option<PathBuf> {
    cache_dir_in(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_dir_in(xdg_cache: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(xdg_cache)
        .or_else(|| set(home).map(|h| h.join(".cache")))
        .map(|c| c.join("memlog").join("models").join(DEFAULT_MODEL))
}

/// [`find_model`] with the environment passed in, so it can be tested without touching the
/// process environment.
fn find_model_in(
    explicit: Option<&Path>,
    env_model: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    let cache = cache_dir_in(xdg_cache, home);
    let candidates = [
        (explicit.map(Path::to_path_buf), "the configured model path"),
        (set(env_model), MODEL_ENV),
        (cache, "the model cache"),
    ];
    for (dir, source) in candidates {
        let Some(dir) = dir else { continue };
        match missing_file(&dir) {
            None => return Some(dir),
            // The cache is only a guess: its absence is normal, not worth a warning.
            Some(_) if source == "the model cache" && !dir.exists() => {}
            Some(file) => tracing::warn!(
                dir = %dir.display(),
                "embedding model from {source} skipped: {file} is missing"
            ),
        }
    }
    None
}

/// The first of [`MODEL_FILES`] that `dir` lacks, if any.
fn missing_file(dir: &Path) -> Option<&'static str> {
    MODEL_FILES.into_iter().find(|f| !dir.join(f).is_file())
}

/// Scales `v` to unit length in place. A zero vector is left as it is.
fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(root: &Path, name: &str, files: &[&str]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        dir
    }

    #[test]
    fn find_model_prefers_explicit_then_env_then_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let explicit = model_dir(tmp.path(), "explicit", &MODEL_FILES);
        let env = model_dir(tmp.path(), "env", &MODEL_FILES);
        let xdg = tmp.path().join("xdg");
        let cached = model_dir(&xdg.join("memlog/models"), DEFAULT_MODEL, &MODEL_FILES);
        let os = |p: &Path| Some(p.as_os_str().to_owned());

        let found = find_model_in(Some(&explicit), os(&env), os(&xdg), None);
        assert_eq!(found, Some(explicit));
        assert_eq!(find_model_in(None, os(&env), os(&xdg), None), Some(env));
        assert_eq!(
            find_model_in(None, None, os(&xdg), None),
            Some(cached.clone())
        );
        // Empty variables count as unset.
        let empty = Some(OsString::new());
        assert_eq!(
            find_model_in(None, empty.clone(), os(&xdg), empty),
            Some(cached)
        );
    }

    #[test]
    fn find_model_falls_back_to_home_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let cached = model_dir(
            &home.join(".cache/memlog/models"),
            DEFAULT_MODEL,
            &MODEL_FILES,
        );
        let found = find_model_in(None, None, None, Some(home.into_os_string()));
        assert_eq!(found, Some(cached));
    }

    #[test]
    fn find_model_skips_incomplete_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let partial = model_dir(tmp.path(), "partial", &["config.json", "tokenizer.json"]);
        let env = model_dir(tmp.path(), "env", &MODEL_FILES);
        assert_eq!(missing_file(&partial), Some("model.safetensors"));
        let found = find_model_in(
            Some(&partial),
            Some(env.clone().into_os_string()),
            None,
            None,
        );
        assert_eq!(found, Some(env));
        let nowhere = tmp.path().join("nowhere");
        let found = find_model_in(Some(&partial), None, Some(nowhere.into_os_string()), None);
        assert_eq!(found, None);
    }

    #[test]
    fn l2_normalise_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalise(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        l2_normalise(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
