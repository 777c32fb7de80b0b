//! A feature-hashing embedder: cheap, deterministic, dependency-free and not semantic.

use super::{Embedder, l2_normalise};
use crate::{Error, Result};

/// Embeds a text as the signed, hashed counts of its words and adjacent word pairs
/// ("the hashing trick"), L2-normalised.
///
/// Texts that share words land close together; synonyms and paraphrases do not. It exists
/// so that tests run without model files, and as the fallback when no model is present,
/// which callers must announce loudly: retrieval quality is far below [`super::MiniLm`].
///
/// Words are maximal runs of alphanumeric characters, lower-cased (Unicode-aware). The hash
/// is FNV-1a, spelled out here rather than `std`'s hasher, whose output may change between
/// Rust releases: stored vectors must stay comparable across builds.
#[derive(Debug, Clone)]
pub struct Hashing {
    dim: usize,
    name: String,
}

/// Weight of a word pair relative to a single word.
const BIGRAM_WEIGHT: f32 = 0.5;
/// The one feature of a text without words, so that it still gets a unit vector.
const NO_WORDS: &[u8] = b"\0no-words";

impl Hashing {
    /// The dimension [`Hashing::default`] uses, the same as all-MiniLM-L6-v2's.
    pub const DEFAULT_DIM: usize = 384;

    /// A hashing embedder with `dim`-long vectors. Fails if `dim` is 0.
    pub fn new(dim: usize) -> Result<Hashing> {
        if dim == 0 {
            return Err(Error::invalid("hashing embedder dimension must be > 0"));
        }
        Ok(Hashing::with_dim(dim))
    }

    fn with_dim(dim: usize) -> Hashing {
        Hashing {
            dim,
            name: format!("hashing-v1-{dim} (words and word pairs; not semantic)"),
        }
    }

    fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            self.add(&mut v, &[NO_WORDS], 1.0);
        }
        for w in &words {
            self.add(&mut v, &[b"w:", w.as_bytes()], 1.0);
        }
        for pair in words.windows(2) {
            let parts = [
                b"b:".as_slice(),
                pair[0].as_bytes(),
                b" ",
                pair[1].as_bytes(),
            ];
            self.add(&mut v, &parts, BIGRAM_WEIGHT);
        }
        l2_normalise(&mut v);
        v
    }

    /// Adds `weight` to the slot the feature hashes to, with a sign taken from the hash so
    /// that collisions cancel out on average instead of piling up.
    fn add(&self, v: &mut [f32], feature: &[&[u8]], weight: f32) {
        let h = fnv1a(feature);
        let slot = (h % self.dim as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[slot] += sign * weight;
    }
}

impl Default for Hashing {
    fn default() -> Hashing {
        Hashing::with_dim(Hashing::DEFAULT_DIM)
    }
}

impl Embedder for Hashing {
    fn dim(&self) -> usize {
        self.dim
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn is_instant(&self) -> bool {
        true
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// 64-bit FNV-1a over the concatenation of `parts`.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"foo", b"bar"]), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn words_are_case_and_punctuation_insensitive() {
        let h = Hashing::default();
        let v = h
            .embed(&["Hello, World!", "hello world", "hello  world"])
            .unwrap();
        assert_eq!(v[0], v[1]);
        assert_eq!(v[1], v[2]);
    }

    #[test]
    fn word_order_matters_through_pairs() {
        let h = Hashing::default();
        let v = h.embed(&["dog bites man", "man bites dog"]).unwrap();
        assert_ne!(v[0], v[1]);
    }

    #[test]
    fn zero_dim_is_rejected() {
        let err = Hashing::new(0).unwrap_err();
        assert!(err.is_caller_error(), "{err}");
        assert_eq!(Hashing::new(16).unwrap().dim(), 16);
        assert!(Hashing::default().name().contains("not semantic"));
    }
}
