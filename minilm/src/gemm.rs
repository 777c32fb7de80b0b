//! `C = A·Wᵀ + b` with A and W rounded to bf16 and every product summed in f32.
//!
//! W is a linear layer's weight (`[n][k]`, as PyTorch stores it), packed once at load time
//! into the layout AVX-512 BF16's `VDPBF16PS` reads: panels of [`NR`] output columns, and
//! inside a panel, for each pair of inputs `k, k+1`, one 32-bit word per column holding
//! the two bf16 values (the lower half is `k`). A row of A is converted the same way, so a
//! 32-bit broadcast of one of its pairs meets a 64-byte load of the panel: one instruction
//! does 16 columns × 2 inputs. On this family of CPUs (Zen 4) that instruction does twice
//! the multiply-adds of an f32 FMA per cycle.
//!
//! Two implementations of the same arithmetic:
//!
//! - `avx512`: register tiles of [`MR`] rows × [`NR`] columns (24 accumulators), used when
//!   the CPU has AVX-512 BF16 (checked at run time, once; [`Kernel::best`]);
//! - [`portable`]: plain loops over the same bf16 values, for every other CPU and as the
//!   oracle the kernel is tested against.
//!
//! Rounding: f32 → bf16 rounds to nearest, ties to even (what `VCVTNE2PS2BF16` does).

/// Output columns per panel (4 × 16 f32 lanes).
pub const NR: usize = 64;

/// Rows per register tile: 6 × 4 accumulators + 4 panel vectors + 1 broadcast = 29 of the
/// 32 vector registers.
pub const MR: usize = 6;

/// `x` rounded to the nearest bf16 (ties to even), as the upper 16 bits of an f32.
#[inline(always)]
pub fn bf16(x: f32) -> u32 {
    let bits = x.to_bits();
    (bits + 0x7fff + ((bits >> 16) & 1)) >> 16
}

/// The f32 value of a bf16.
#[inline(always)]
fn widen(b: u32) -> f32 {
    f32::from_bits(b << 16)
}

/// Two values as one pair word: `lo` in the lower half, as `VDPBF16PS` pairs them.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16(lo) | (bf16(hi) << 16)
}

/// A weight matrix `[n][k]` and its bias, packed for [`matmul`]. `n` is a multiple of
/// [`NR`] and `k` is even (checked by [`Packed::new`]).
pub struct Packed {
    n: usize,
    k: usize,
    /// `data[(panel · k/2 + p) · NR + c]` = the pair (`W[panel·NR + c][2p]`, `…[2p + 1]`).
    data: Vec<u32>,
    bias: Vec<f32>,
}

impl Packed {
    /// Packs `w` (`n` rows of `k`, row-major) and `bias` (`n`). `None` if the shape is not
    /// one the kernel takes: `n` a multiple of [`NR`], `k` even, lengths consistent.
    pub fn new(w: &[f32], bias: &[f32], n: usize, k: usize) -> Option<Packed> {
        if n == 0
            || !n.is_multiple_of(NR)
            || k == 0
            || !k.is_multiple_of(2)
            || w.len() != n * k
            || bias.len() != n
        {
            return None;
        }
        let kp = k / 2;
        let mut data = vec![0u32; n * kp];
        for panel in 0..n / NR {
            for p in 0..kp {
                let out = &mut data[(panel * kp + p) * NR..][..NR];
                for (c, o) in out.iter_mut().enumerate() {
                    let row = &w[(panel * NR + c) * k..][..k];
                    *o = pair(row[2 * p], row[2 * p + 1]);
                }
            }
        }
        Some(Packed {
            n,
            k,
            data,
            bias: bias.to_vec(),
        })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs per row.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Converts `m` rows of `k` f32 (row-major) into pair words (`m · k/2`), the form
/// [`matmul`] reads A in. `out` is resized as needed.
pub fn to_pairs(a: &[f32], out: &mut Vec<u32>) {
    out.resize(a.len() / 2, 0);
    crate::math::vectorized(
        #[inline(always)]
        || pack_row(a, out),
    );
}

/// One row's pair words: `out[i]` = the pair (`row[2i]`, `row[2i + 1]`).
#[inline(always)]
pub fn pack_row(row: &[f32], out: &mut [u32]) {
    for (o, p) in out.iter_mut().zip(row.chunks_exact(2)) {
        *o = pair(p[0], p[1]);
    }
}

/// Which implementation runs the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The AVX-512 BF16 register tiles.
    Avx512Bf16,
    /// The same arithmetic in plain Rust (vectorised by the compiler where it can).
    Portable,
}

impl Kernel {
    /// The fastest this CPU runs.
    pub fn best() -> Kernel {
        if avx512::available() {
            Kernel::Avx512Bf16
        } else {
            Kernel::Portable
        }
    }

    /// `self` if this CPU can run it, else [`Kernel::Portable`].
    pub fn or_portable(self) -> Kernel {
        match self {
            Kernel::Avx512Bf16 if avx512::available() => self,
            _ => Kernel::Portable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Bf16 => "AVX-512 BF16",
            Kernel::Portable => "portable",
        }
    }
}

/// `out[i][j] = Σₖ bf16(A[i][k]) · bf16(W[j][k]) + bias[j]` for `m` rows, where `a` holds
/// A as pair words ([`to_pairs`]) and `out` has room for `m · w.n()` values.
///
/// # Panics
/// If `a` or `out` is shorter than `m` rows.
pub fn matmul(kernel: Kernel, a: &[u32], m: usize, w: &Packed, out: &mut [f32]) {
    matmul_then(kernel, a, m, w, out, |_, _| {});
}

/// [`matmul`], calling `then(first, rows)` on each block of finished output rows (at most
/// [`MR`] of them, in order, `first` the index of the first) while they are still in
/// cache: the place for what comes next (activation, residual and norm, packing).
pub fn matmul_then(
    kernel: Kernel,
    a: &[u32],
    m: usize,
    w: &Packed,
    out: &mut [f32],
    then: impl FnMut(usize, &mut [f32]),
) {
    let kp = w.k / 2;
    assert!(a.len() >= m * kp, "A has fewer than {m} rows of {}", w.k);
    assert!(out.len() >= m * w.n, "C has fewer than {m} rows of {}", w.n);
    match kernel.or_portable() {
        Kernel::Avx512Bf16 => avx512::matmul(a, m, w, out, then),
        Kernel::Portable => portable(a, m, w, out, then),
    }
}

/// [`matmul_then`] in plain Rust: the same bf16 values, products and f32 sums, in a
/// different order (so equal to the kernel within f32 rounding of the sums).
pub fn portable(
    a: &[u32],
    m: usize,
    w: &Packed,
    out: &mut [f32],
    mut then: impl FnMut(usize, &mut [f32]),
) {
    let kp = w.k / 2;
    for first in (0..m).step_by(MR) {
        let rows = (m - first).min(MR);
        let block = &mut out[first * w.n..(first + rows) * w.n];
        crate::math::vectorized(
            #[inline(always)]
            || {
                for (r, c) in block.chunks_exact_mut(w.n).enumerate() {
                    let row = &a[(first + r) * kp..][..kp];
                    for panel in 0..w.n / NR {
                        let mut acc = [0f32; NR];
                        acc.copy_from_slice(&w.bias[panel * NR..][..NR]);
                        for (p, &pa) in row.iter().enumerate() {
                            let (lo, hi) = (widen(pa & 0xffff), widen(pa >> 16));
                            let words = &w.data[(panel * kp + p) * NR..][..NR];
                            for (acc, &pw) in acc.iter_mut().zip(words) {
                                *acc += hi * widen(pw >> 16) + lo * widen(pw & 0xffff);
                            }
                        }
                        c[panel * NR..][..NR].copy_from_slice(&acc);
                    }
                }
            },
        );
        then(first, block);
    }
}

/// The AVX-512 BF16 kernel. The only `unsafe` code in memlog outside tests: intrinsics
/// behind a run-time CPU check, and pointer loads whose bounds [`super::matmul`] checked.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use super::{MR, NR, Packed};

    pub fn available() -> bool {
        static YES: OnceLock<bool> = OnceLock::new();
        *YES.get_or_init(|| {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
        })
    }

    /// See [`super::matmul`]; the caller has checked the lengths.
    pub fn matmul(
        a: &[u32],
        m: usize,
        w: &Packed,
        out: &mut [f32],
        mut then: impl FnMut(usize, &mut [f32]),
    ) {
        assert!(available());
        let kp = w.k / 2;
        debug_assert!(a.len() >= m * kp && out.len() >= m * w.n);
        // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (asserted above). Every pointer
        // the tiles read or write stays inside `a`, `w.data`, `w.bias` or `out`: rows
        // `i..i + rows` with `i + rows <= m`, `a` holds `m · kp` words and `out` `m · n`
        // floats (checked by the caller), and a panel is `kp · NR` words of `w.data`
        // (`n/NR` panels, by construction in `Packed::new`).
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            unsafe {
                for panel in 0..w.n / NR {
                    let a = a.as_ptr().add(i * kp);
                    let b = w.data.as_ptr().add(panel * kp * NR);
                    let bias = w.bias.as_ptr().add(panel * NR);
                    let c = out.as_mut_ptr().add(i * w.n + panel * NR);
                    match rows {
                        6 => tile::<6>(a, kp, b, bias, c, w.n),
                        5 => tile::<5>(a, kp, b, bias, c, w.n),
                        4 => tile::<4>(a, kp, b, bias, c, w.n),
                        3 => tile::<3>(a, kp, b, bias, c, w.n),
                        2 => tile::<2>(a, kp, b, bias, c, w.n),
                        _ => tile::<1>(a, kp, b, bias, c, w.n),
                    }
                }
            }
            then(i, &mut out[i * w.n..(i + rows) * w.n]);
            i += rows;
        }
    }

    /// `R` rows × `NR` columns of C: `R · 4` accumulators over all `kp` pairs, then the
    /// bias, then one store per accumulator. `a` is the first row (rows `kp` words apart),
    /// `b` the panel, `c` the first output (rows `ldc` floats apart).
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 BF16; `a` has `R` rows of `kp` words, `b` has
    /// `kp · NR` words, `bias` `NR` floats, and `c` has `R` rows of `NR` floats, `ldc`
    /// apart.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        kp: usize,
        b: *const u32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for p in 0..kp {
            // SAFETY (all loads): within the panel and rows, as `matmul` explains.
            let panel = unsafe { b.add(p * NR) };
            let load = |j: usize| -> __m512bh {
                unsafe { std::mem::transmute(_mm512_loadu_si512(panel.add(j * 16).cast())) }
            };
            let bv = [load(0), load(1), load(2), load(3)];
            for (r, acc) in acc.iter_mut().enumerate() {
                let word = unsafe { a.add(r * kp + p).read() };
                let av: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(word as i32)) };
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_dpbf16_ps(*acc, av, bv);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, &v) in acc.iter().enumerate() {
                unsafe {
                    let sum = _mm512_add_ps(v, _mm512_loadu_ps(bias.add(j * 16)));
                    _mm512_storeu_ps(c.add(r * ldc + j * 16), sum);
                }
            }
        }
    }
}

/// Other architectures have no kernel: [`matmul`] runs [`portable`].
#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub fn available() -> bool {
        false
    }

    pub fn matmul(
        _: &[u32],
        _: usize,
        _: &super::Packed,
        _: &mut [f32],
        _: impl FnMut(usize, &mut [f32]),
    ) {
        unreachable!("no AVX-512 off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(widen(bf16(1.0)), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(widen(bf16(1.0 + 1.0 / 256.0)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to 1 + 2^-6 (even).
        assert_eq!(widen(bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        // Just above halfway rounds up.
        assert_eq!(widen(bf16(1.0 + 1.0 / 256.0 + 1e-6)), 1.0 + 1.0 / 128.0);
        assert_eq!(widen(bf16(-2.5)), -2.5);
        let x = 0.123_456_79_f32;
        assert!((widen(bf16(x)) - x).abs() <= x * (1.0 / 256.0));
    }

    #[test]
    fn packed_rejects_shapes_the_kernel_cannot_take() {
        assert!(Packed::new(&[0.0; 64 * 3], &[0.0; 64], 64, 3).is_none());
        assert!(Packed::new(&[0.0; 32 * 2], &[0.0; 32], 32, 2).is_none());
        assert!(Packed::new(&[0.0; 64 * 2], &[0.0; 63], 64, 2).is_none());
        assert!(Packed::new(&[0.0; 64 * 2], &[0.0; 64], 64, 2).is_some());
    }

    /// C from f64 sums of the bf16-rounded inputs: what both implementations approximate.
    fn exact(a: &[f32], w: &[f32], bias: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let r = |x: f32| f64::from(widen(bf16(x)));
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|t| r(a[i * k + t]) * r(w[j * k + t])).sum();
                c[i * n + j] = (s + f64::from(bias[j])) as f32;
            }
        }
        c
    }

    /// Every tile height (1..=6 leftover rows) and several panels, against f64 sums.
    #[test]
    fn matmul_matches_exact_sums_of_bf16_products() {
        let mut rng = fastrand::Rng::with_seed(11);
        let (n, k) = (3 * NR, 98);
        let w: Vec<f32> = (0..n * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
        let packed = Packed::new(&w, &bias, n, k).unwrap();
        for m in [1, 5, 6, 7, 13, 17] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let mut pairs = Vec::new();
            to_pairs(&a, &mut pairs);
            let want = exact(&a, &w, &bias, m, n, k);
            let mut fast = vec![f32::NAN; m * n];
            matmul(Kernel::best(), &pairs, m, &packed, &mut fast);
            let mut slow = vec![f32::NAN; m * n];
            let mut blocks = Vec::new();
            portable(&pairs, m, &packed, &mut slow, |first, rows| {
                blocks.push((first, rows.len() / n));
            });
            // Blocks of at most MR rows, in order, covering every row once.
            let mut next = 0;
            for &(first, rows) in &blocks {
                assert!(first == next && (1..=MR).contains(&rows), "{blocks:?}");
                next += rows;
            }
            assert_eq!(next, m);
            for (what, got) in [(Kernel::best().name(), &fast), ("portable", &slow)] {
                for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4,
                        "{what}, m={m}: C[{}][{}] = {g}, exact {e}",
                        idx / n,
                        idx % n
                    );
                }
            }
        }
    }
}
