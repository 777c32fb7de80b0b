//! The f32 element-wise parts of a BERT layer, written so the compiler vectorises them:
//! no calls into libm (which it cannot vectorise), sums over a row kept in 16 independent
//! lanes (it may not reorder one float sum), and polynomials in explicit `mul_add` (it
//! does not fuse a multiply and an add by itself). Without FMA (pulp's baseline path, on
//! CPUs older than AVX2) `mul_add` is a slow library call: correct, not fast.
//!
//! Callers run these inside [`vectorized`], so they are compiled for AVX-512 or AVX2 where
//! the CPU has them; every function here is `#[inline(always)]` to stay inside that
//! dispatch.

/// Runs `f` compiled for the best instruction set this CPU has (AVX-512, AVX2 or
/// baseline), through pulp. Pass an `#[inline(always)]` closure: only code inlined into the
/// dispatch gets the wider instructions. (pulp's own closure support calls
/// `FnOnce::call_once`, whose shim for a borrowing closure is not inlined, so the body
/// would be compiled for the baseline; calling through `FnMut` avoids the shim.)
#[inline(always)]
pub fn vectorized<R>(f: impl FnMut() -> R) -> R {
    struct Op<F>(F);
    impl<R, F: FnMut() -> R> pulp::WithSimd for Op<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(mut self, _: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Op(f))
}

/// Lanes of the partial sums in [`sum`].
const LANES: usize = 16;

/// `Σ f(x)` over `xs`, summed in [`LANES`] independent partial sums.
#[inline(always)]
pub fn sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&x| f(x)).sum::<f32>()
}

/// `e^x` to within 2 ulp for x in [-87, 88] (smaller x gives ~1e-38, larger is clamped):
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2 (ln 2 split in two parts so `r` is exact), e^r from
/// its Taylor series to r⁷ (error < 1e-8), and 2ⁿ built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ]
    .iter()
    .rev()
    .fold(0.0f32, |acc, &c| acc.mul_add(r, c));
    // 2ⁿ: n + 127 is an integer in [1, 254], so adding 2²³ puts it in the low mantissa
    // bits; shifting those into the exponent field builds the power of two. (`n as i32`
    // would do, but Rust's saturating float-to-int cast is not vectorised.)
    let biased = (n + (127.0 + 8_388_608.0)).to_bits();
    p * f32::from_bits(biased << 23)
}

/// The error function, to within 4e-7 absolute: `x·P(x²)/Q(x²)` on x clamped to ±3.92
/// (where erf rounds to ±1 in f32), with P of degree 5 and Q of degree 5 in x². The
/// coefficients are our own weighted least-squares fit to erf on [0, 3.92] (error 1.6e-8
/// in f64); the rest is f32 rounding. One division and ten multiply-adds: no exponential.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    // The leading coefficient came out as 2/√π, erf's slope at 0.
    const P: [f32; 6] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        0.192_779_35,
        0.053_062_003,
        0.003_868_851_6,
        0.000_287_468_08,
        2.034_311_1e-6,
    ];
    const Q: [f32; 6] = [
        1.0,
        0.504_177_9,
        0.115_090_48,
        0.015_173_358,
        0.001_188_199_5,
        3.806_566_4e-5,
    ];
    let x = x.clamp(-3.92, 3.92);
    let z = x * x;
    let p = P.iter().rev().fold(0.0f32, |acc, &c| acc.mul_add(z, c));
    let q = Q.iter().rev().fold(0.0f32, |acc, &c| acc.mul_add(z, c));
    x * p / q
}

/// BERT's GELU, the exact one: `x · Φ(x) = x/2 · (1 + erf(x/√2))`, in place.
#[inline(always)]
pub fn gelu(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `x ← LayerNorm(x + add)` over one row: mean and variance in two passes (as PyTorch),
/// biased variance, then `γ · (x − mean) / √(var + eps) + β`.
#[inline(always)]
pub fn add_layer_norm(x: &mut [f32], add: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    if let Some(add) = add {
        for (x, a) in x.iter_mut().zip(add) {
            *x += a;
        }
    }
    let len = x.len() as f32;
    let mean = sum(x, |v| v) / len;
    let var = sum(x, |v| (v - mean) * (v - mean)) / len;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

/// `x ← e^(x − m)` over `row`, whose length is a multiple of [`LANES`].
#[inline(always)]
pub fn exp_minus(row: &mut [f32], m: f32) {
    for block in row.chunks_exact_mut(LANES) {
        for x in block {
            *x = exp(*x - m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_7;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
    }

    /// erf from its Taylor series, summed in f64.
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut total, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            total += term / (2.0 * n + 1.0);
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_its_bound() {
        let mut worst = 0f64;
        // Past the clamp too (the series loses ~7 digits to cancellation at 4.5: still
        // 1e-9, far below the bound).
        for i in -4500..=4500 {
            let x = i as f64 / 1000.0;
            worst = worst.max((f64::from(erf(x as f32)) - erf_series(x)).abs());
        }
        assert!(worst < 4e-7, "worst absolute error {worst}");
        assert!((erf(10.0) - 1.0).abs() < 1e-7 && erf(-10.0) == -erf(10.0));
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn layer_norm_and_exp_minus_do_what_they_say() {
        let mut x: Vec<f32> = (0..40).map(|i| i as f32 * 0.5 - 3.0).collect();
        let add = vec![1.0; 40];
        let gamma = vec![2.0; 40];
        let beta = vec![0.5; 40];
        add_layer_norm(&mut x, Some(&add), &gamma, &beta, 1e-12);
        let mean = x.iter().sum::<f32>() / 40.0;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 40.0;
        assert!((mean - 0.5).abs() < 1e-5, "mean {mean}");
        assert!((var - 4.0).abs() < 1e-4, "var {var}");

        let mut row = vec![0.0, 1.0, -1.0, 3.0];
        row.resize(16, 2.0);
        exp_minus(&mut row, 3.0);
        assert!((row[3] - 1.0).abs() < 1e-7 && (row[0] - (-3.0f32).exp()).abs() < 1e-7);
    }
}
