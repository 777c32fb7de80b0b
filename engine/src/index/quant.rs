//! Int8 scalar codes of the index's vectors, for scans that read many vectors once and for
//! the HNSW graph walk (which [`super::hnsw::Hnsw::search`] makes on codes, then rescores
//! in `f32` with the bound below).
//!
//! An exact search over a filter's candidates (say the 10k records of one namespace in a
//! memory of 100k) reads every candidate's vector from memory: 1,536 bytes each in `f32`,
//! 15 MB for 10k, which is memory-bound (about 150 ns a vector on the benches' machine).
//! The codes are a quarter of that. Each vector `v` is stored as `s · c` with `c` in
//! `i8^dim` and one scale `s = max|v_i| / 127` (per vector, so no training and no drift
//! as records arrive), plus two numbers that make the approximation safe to use:
//!
//! ```text
//!   v = v̂ + e        v̂ = s · c   (the decoded vector)    e = the rounding error
//!   q·v = q̂·v̂ + q̂·e + e_q·v̂ + e_q·e
//!   |q·v − q̂·v̂| ≤ ‖q̂‖‖e‖ + ‖e_q‖‖v̂‖ + ‖e_q‖‖e‖           (Cauchy–Schwarz)
//! ```
//!
//! `q̂·v̂ = s_q · s_v · Σ c_q,i c_v,i` is an integer dot product (exact in `i32`), and
//! `‖v̂‖`, `‖e‖` are kept per vector, so every approximate score comes with a bound. An
//! exact top-k then needs the `f32` vectors only of the candidates whose upper bound
//! reaches the k-th best lower bound: the result is the same as a full `f32` scan (see
//! [`super::hnsw::Hnsw::refine`]). For 384-d MiniLM vectors `‖e‖` is about 0.01.
//!
//! The graph keeps one row per node. The namespace scans keep their own copy, with each
//! namespace's list of points ([`super::NsPoints`]) and in that list's order, so a
//! namespace-filtered scan reads one contiguous block: scattered rows (one per 4 KB page
//! when a namespace holds a tenth of a memory) cost a TLB miss and a memory latency each,
//! about 80 ns, while a sequential scan streams.

/// Codes, one row of `dim` bytes per vector, in insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Codes {
    dim: usize,
    codes: Vec<i8>,
    /// Per vector: scale `s`, `‖v̂‖`, `‖e‖`.
    meta: Vec<[f32; 3]>,
}

/// A query's code, computed once per search.
pub struct QueryCode {
    code: Vec<i8>,
    meta: [f32; 3],
}

/// Encodes `v` into `out` (cleared first); returns `[s, ‖v̂‖, ‖e‖]`.
fn encode(v: &[f32], out: &mut Vec<i8>) -> [f32; 3] {
    out.clear();
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(max.is_finite() && max > 0.0) {
        out.resize(v.len(), 0);
        let norm = v
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        return [0.0, 0.0, norm as f32];
    }
    let s = max / 127.0;
    let inv = 127.0 / max;
    let (mut decoded, mut err) = (0.0f64, 0.0f64);
    for &x in v {
        // Round half away from zero by hand: `f32::round` is a libm call on baseline x86-64
        // and was most of the encoding time when a 100k-record index loads. The error
        // bound holds whatever the rounding, since it is measured.
        let y = x * inv;
        let c = ((y + 0.5f32.copysign(y)) as i32).clamp(-127, 127) as f32;
        out.push(c as i8);
        let d = f64::from(c) * f64::from(s);
        decoded += d * d;
        err += (f64::from(x) - d) * (f64::from(x) - d);
    }
    // Rounded up a little, so the bound stays a bound after the f32 arithmetic.
    [
        s,
        (decoded.sqrt() * (1.0 + 1e-6)) as f32,
        (err.sqrt() * (1.0 + 1e-6)) as f32,
    ]
}

impl Codes {
    pub fn new(dim: usize) -> Codes {
        Codes {
            dim,
            codes: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// Codes of `vectors` (`dim` floats each, row-major).
    #[cfg(test)]
    pub fn of(dim: usize, vectors: &[f32]) -> Codes {
        let mut out = Codes::new(dim);
        if dim > 0 {
            for v in vectors.chunks_exact(dim) {
                out.push(v);
            }
        }
        out
    }

    pub fn push(&mut self, v: &[f32]) {
        let mut code = Vec::with_capacity(self.dim);
        let meta = encode(v, &mut code);
        self.codes.extend_from_slice(&code);
        self.meta.push(meta);
    }

    /// Inserts row `row` of `from` (same `dim`) at row `at`, rows after it moving up: a
    /// copy, not an encoding.
    pub fn insert_row(&mut self, at: usize, from: &Codes, row: usize) {
        debug_assert_eq!(self.dim, from.dim);
        let (i, j) = (at * self.dim, row * from.dim);
        self.codes
            .splice(i..i, from.codes[j..j + from.dim].iter().copied());
        self.meta.insert(at, from.meta[row]);
    }

    /// Keeps the rows for which `keep(row)` holds.
    pub fn retain_rows(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let dim = self.dim;
        let mut to = 0;
        for row in 0..self.meta.len() {
            if keep(row) {
                if to != row {
                    self.codes.copy_within(row * dim..(row + 1) * dim, to * dim);
                    self.meta[to] = self.meta[row];
                }
                to += 1;
            }
        }
        self.codes.truncate(to * dim);
        self.meta.truncate(to);
    }

    pub fn query(q: &[f32]) -> QueryCode {
        let mut code = Vec::with_capacity(q.len());
        let meta = encode(q, &mut code);
        QueryCode { code, meta }
    }

    /// The first code byte of `row` (to touch its cache line ahead of a scan), or 0.
    #[inline(always)]
    pub fn first(&self, row: usize) -> i8 {
        self.codes.get(row * self.dim).copied().unwrap_or(0)
    }

    /// The approximate dot product of the query with the vector of `row`, without the
    /// bound (graph walks only compare these).
    #[inline(always)]
    pub fn score(&self, q: &QueryCode, row: usize) -> f32 {
        let i = row * self.dim;
        dot_i8(&q.code, &self.codes[i..i + self.dim]) as f32 * (q.meta[0] * self.meta[row][0])
    }

    /// The approximate dot product of the query with the vector of `row`, and a bound on
    /// its error.
    #[inline]
    pub fn approx(&self, q: &QueryCode, row: usize) -> (f32, f32) {
        let approx = self.score(q, row);
        (approx, self.bound(q, row, approx))
    }

    /// The bound on the error of `approx`, the approximate score ([`Codes::score`]) of
    /// the query with `row`.
    #[inline]
    pub fn bound(&self, q: &QueryCode, row: usize, approx: f32) -> f32 {
        let ([_, qnorm, qerr], [_, norm, err]) = (q.meta, self.meta[row]);
        let bound = qnorm * err + qerr * norm + qerr * err;
        // The products round too; a relative 1e-5 of the scale covers them.
        bound + 1e-5 * (1.0 + approx.abs())
    }
}

/// `Σ a_i b_i` in `i32` (exact: at most 127² × dim).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = v4() {
        return pulp::Simd::vectorize(v4, DotI8(a, b));
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(v3, DotI8(a, b));
    }
    DotI8(a, b).scalar()
}

#[cfg(target_arch = "x86_64")]
fn v4() -> Option<pulp::x86::V4> {
    static V4: std::sync::OnceLock<Option<pulp::x86::V4>> = std::sync::OnceLock::new();
    *V4.get_or_init(pulp::x86::V4::try_new)
}

/// The integer dot product as a plain loop: compiled inside pulp's dispatch, LLVM turns it
/// into widening multiply-adds (`vpmovsxbw` + `vpmaddwd`) of the enabled width.
struct DotI8<'a>(&'a [i8], &'a [i8]);

impl DotI8<'_> {
    #[inline(always)]
    fn scalar(self) -> i32 {
        self.0
            .iter()
            .zip(self.1)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum()
    }
}

impl pulp::WithSimd for DotI8<'_> {
    type Output = i32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> i32 {
        self.scalar()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut v: Vec<f32> = (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn integer_dot_matches_naive_at_every_length() {
        let mut rng = fastrand::Rng::with_seed(3);
        for len in 0..200 {
            let a: Vec<i8> = (0..len).map(|_| rng.i8(-127..=127)).collect();
            let b: Vec<i8> = (0..len).map(|_| rng.i8(-127..=127)).collect();
            let naive: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
            assert_eq!(dot_i8(&a, &b), naive, "len {len}");
        }
    }

    #[test]
    fn the_bound_holds_and_is_tight() {
        let dim = 384;
        let vectors: Vec<f32> = (0..500).flat_map(|i| unit(i, dim)).collect();
        let codes = Codes::of(dim, &vectors);
        let mut widest = 0.0f32;
        for qi in 0..20 {
            let q = unit(10_000 + qi, dim);
            let qc = Codes::query(&q);
            for id in 0..500u32 {
                let v = &vectors[id as usize * dim..(id as usize + 1) * dim];
                let truth: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
                let (approx, bound) = codes.approx(&qc, id as usize);
                assert!(
                    (truth - approx).abs() <= bound,
                    "id {id}: truth {truth} approx {approx} bound {bound}"
                );
                widest = widest.max(bound);
            }
        }
        // Tight enough to prune: far below the spread of scores between unit vectors.
        assert!(widest < 0.05, "bound {widest}");
    }

    #[test]
    fn zero_and_odd_vectors_are_bounded() {
        let codes = Codes::of(4, &[0.0, 0.0, 0.0, 0.0, 1e-30, -2.0, 0.5, 3.0]);
        let q = Codes::query(&[0.5, 0.5, 0.5, 0.5]);
        for (id, v) in [[0.0f32, 0.0, 0.0, 0.0], [1e-30, -2.0, 0.5, 3.0]]
            .iter()
            .enumerate()
        {
            let truth: f32 = v.iter().map(|x| x * 0.5).sum();
            let (approx, bound) = codes.approx(&q, id);
            assert!(
                (truth - approx).abs() <= bound,
                "{id}: {truth} {approx} {bound}"
            );
        }
    }
}
