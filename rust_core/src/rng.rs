//! Counter-based random numbers: Philox4x64-10 (Salmon et al., SC'11, "Parallel random
//! numbers: as easy as 1, 2, 3"), the generator behind `numpy.random.Philox`.
//!
//! A block of four 64-bit words is a pure function of a 256-bit counter and a 128-bit key,
//! so any draw can be made by any thread in any order. mfg_ensemble lays its streams out as
//!
//!   key     = (seed, 0)
//!   counter = (block, step, stream, 0)
//!
//! and turns the four words of one block into four standard normals with the Box–Muller
//! transform: words (w0, w1) give (r cos θ, r sin θ) with u1 = ((w0 >> 11) + 1)·2⁻⁵³ ∈ (0, 1],
//! u2 = (w1 >> 11)·2⁻⁵³ ∈ [0, 1), r = √(−2 ln u1), θ = 2π u2; words (w2, w3) likewise.
//! Normal number `i` of a (seed, step, stream) sequence is therefore entry `i % 4` of block
//! `i / 4`, whatever the thread count. `mfg_ensemble.rng` is the NumPy twin of this module.

const M0: u64 = 0xD2E7_470E_E14C_6C93;
const M1: u64 = 0xCA5A_8263_9512_1157;
const W0: u64 = 0x9E37_79B9_7F4A_7C15;
const W1: u64 = 0xBB67_AE85_84CA_A73B;
const TWO_POW_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// Stream tag of the Euler–Maruyama noise (counter word 2).
pub const STREAM_EM: u64 = 0;

/// Whether this CPU runs AVX2 (checked once, then cached by std). The kernels keep a plain
/// x86-64 (SSE2) path and an AVX2 copy of their hot loops, chosen at run time; both do the
/// same arithmetic in the same order (Rust never contracts into FMA), so the bits agree.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU runs AVX-512F (as `has_avx2`).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Whether every value is finite, branch-free per value so that it vectorises: x·0 is ±0
/// unless x is NaN or ±inf, where it is NaN, and NaN survives the lane sums.
#[inline(always)]
pub(crate) fn finite_body(x: &[f64]) -> bool {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] += c[j] * 0.0;
        }
    }
    for (j, &r) in rest.iter().enumerate() {
        acc[j] += r * 0.0;
    }
    acc.iter().all(|&a| a == 0.0)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn finite_avx512(x: &[f64]) -> bool {
    finite_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn finite_avx2(x: &[f64]) -> bool {
    finite_body(x)
}

/// `finite_body` with the widest vectors the CPU has (a fast pre-check; callers run
/// `error::check_finite` for the message only when it fails).
pub(crate) fn all_finite(x: &[f64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: AVX-512F support was checked at run time.
            return unsafe { finite_avx512(x) };
        }
        if has_avx2() {
            // SAFETY: AVX2 support was checked at run time.
            return unsafe { finite_avx2(x) };
        }
    }
    finite_body(x)
}

#[inline(always)]
fn mulhilo(a: u64, b: u64) -> (u64, u64) {
    let p = (a as u128) * (b as u128);
    ((p >> 64) as u64, p as u64)
}

/// Philox4x64 with 10 rounds.
#[inline]
pub fn philox4x64_10(mut ctr: [u64; 4], mut key: [u64; 2]) -> [u64; 4] {
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, ctr[0]);
        let (hi1, lo1) = mulhilo(M1, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

#[inline(always)]
fn box_muller(w_radius: u64, w_angle: u64) -> (f64, f64) {
    let u1 = ((w_radius >> 11) + 1) as f64 * TWO_POW_M53;
    let u2 = (w_angle >> 11) as f64 * TWO_POW_M53;
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

/// The four standard normals of block `block` of the (seed, step, stream) sequence.
#[inline]
pub fn normal_block(seed: u64, step: u64, stream: u64, block: u64) -> [f64; 4] {
    let w = philox4x64_10([block, step, stream, 0], [seed, 0]);
    let (z0, z1) = box_muller(w[0], w[1]);
    let (z2, z3) = box_muller(w[2], w[3]);
    [z0, z1, z2, z3]
}

/// Fill `out` with normals `start .. start + out.len()` of the (seed, step, stream) sequence.
pub fn fill_normals(seed: u64, step: u64, stream: u64, start: u64, out: &mut [f64]) {
    let mut i = 0usize;
    while i < out.len() {
        let index = start + i as u64;
        let block = normal_block(seed, step, stream, index / 4);
        let first = (index % 4) as usize;
        let take = (4 - first).min(out.len() - i);
        out[i..i + take].copy_from_slice(&block[first..first + take]);
        i += take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Random123's known-answer vectors for philox4x64-10; numpy.random.Philox gives the same
    // (it adds one to its counter before each block).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x64_10([0; 4], [0; 2]),
            [0x16554d9eca36314c, 0xdb20fe9d672d0fdc, 0xd7e772cee186176b, 0x7e68b68aec7ba23b]
        );
        assert_eq!(
            philox4x64_10([u64::MAX; 4], [u64::MAX; 2]),
            [0x87b092c3013fe90b, 0x438c3c67be8d0224, 0x9cc7d7c69cd777b6, 0xa09caebf594f0ba0]
        );
        assert_eq!(
            philox4x64_10(
                [0x243f6a8885a308d3, 0x13198a2e03707344, 0xa4093822299f31d0, 0x082efa98ec4e6c89],
                [0x452821e638d01377, 0xbe5466cf34e90c6c]
            ),
            [0xa528f45403e61d95, 0x38c72dbd566e9788, 0xa5a1610e72fd18b5, 0x57bd43b5e52b7fe6]
        );
    }

    #[test]
    fn fill_normals_is_independent_of_the_starting_offset() {
        let mut all = vec![0.0; 23];
        fill_normals(7, 3, STREAM_EM, 0, &mut all);
        for start in 0..23 {
            let mut part = vec![0.0; 23 - start];
            fill_normals(7, 3, STREAM_EM, start as u64, &mut part);
            assert_eq!(&part[..], &all[start..]);
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 400_000;
        let mut z = vec![0.0; n];
        fill_normals(12345, 0, STREAM_EM, 0, &mut z);
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        // standard errors: 1/sqrt(n) = 1.6e-3 for the mean, sqrt(2/n) = 2.2e-3 for the variance
        assert!(mean.abs() < 6.0 * 1.6e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 6.0 * 2.2e-3, "var {var}");
    }

    #[test]
    fn streams_steps_and_seeds_differ() {
        let a = normal_block(1, 0, 0, 0);
        assert_ne!(a, normal_block(2, 0, 0, 0));
        assert_ne!(a, normal_block(1, 1, 0, 0));
        assert_ne!(a, normal_block(1, 0, 1, 0));
        assert_ne!(a, normal_block(1, 0, 0, 1));
    }
}
