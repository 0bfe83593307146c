//! Counter-based random numbers: Philox4x64-10 (the generator of `numpy.random.Philox`) and
//! the Box–Muller transform, giving normal number i of a (seed, step, stream) sequence as a
//! pure function of (seed, step, stream, i), whatever the thread count.
//!
//! The maths: see mfg_ensemble/kernels/reference/rng.py.
//!
//! Implementation: the bulk path (`fill_normals`) makes the Philox words of a batch of blocks
//! as scalar code (64×64-bit products), then runs Box–Muller over the batch as one vectorised
//! loop (`simd::dispatch`). ln and sin/cos are written out (fdlibm's algorithms) so that this
//! loop vectorises; single blocks (`normal_block`) use the very same functions, so a normal
//! has the same bits whether it was made alone or in a batch.

use crate::simd;

const M0: u64 = 0xD2E7_470E_E14C_6C93;
const M1: u64 = 0xCA5A_8263_9512_1157;
const W0: u64 = 0x9E37_79B9_7F4A_7C15;
const W1: u64 = 0xBB67_AE85_84CA_A73B;
const TWO_POW_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// Stream tag of the Euler–Maruyama noise (counter word 2).
pub const STREAM_EM: u64 = 0;

#[inline(always)]
fn mulhilo(a: u64, b: u64) -> (u64, u64) {
    let p = (a as u128) * (b as u128);
    ((p >> 64) as u64, p as u64)
}

/// Philox4x64 with 10 rounds (fully unrolled by the compiler: the loop bound is constant).
#[inline(always)]
pub fn philox4x64_10(ctr: [u64; 4], key: [u64; 2]) -> [u64; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = ctr;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c0);
        let (hi1, lo1) = mulhilo(M1, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// The block's four words as Box–Muller uniforms (u1, u2, u1', u2'). Not inlined on purpose:
/// inlined into the batch loop, the loop vectoriser splits Philox's 64-bit products across
/// vector registers and back, which is twice as slow as plain scalar code.
#[inline(never)]
fn block_uniforms(block: u64, step: u64, stream: u64, seed: u64) -> [f64; 4] {
    let w = philox4x64_10([block, step, stream, 0], [seed, 0]);
    [radius_uniform(w[0]), angle_uniform(w[1]), radius_uniform(w[2]), angle_uniform(w[3])]
}

/// u1 = ((w >> 11) + 1)·2⁻⁵³ ∈ (0, 1] (exact: the integer has at most 53 bits).
#[inline(always)]
fn radius_uniform(w: u64) -> f64 {
    ((w >> 11) + 1) as i64 as f64 * TWO_POW_M53
}

/// u2 = (w >> 11)·2⁻⁵³ ∈ [0, 1).
#[inline(always)]
fn angle_uniform(w: u64) -> f64 {
    (w >> 11) as i64 as f64 * TWO_POW_M53
}

// ln and sin/cos written out (fdlibm's algorithms, errors below one ulp) so that loops over
// arrays of them vectorise; the scalar path uses the very same functions, so a normal does
// not depend on whether it was made alone or in a batch.

/// ln x for a positive normal x (fdlibm's e_log.c, without its special cases).
#[inline(always)]
#[allow(clippy::excessive_precision)] // fdlibm's constants, digit for digit (same f64 values)
fn ln_poly(x: f64) -> f64 {
    const LN2_HI: f64 = 6.93147180369123816490e-01;
    const LN2_LO: f64 = 1.90821492927058770002e-10;
    const LG1: f64 = 6.666666666666735130e-01;
    const LG2: f64 = 3.999999999940941908e-01;
    const LG3: f64 = 2.857142874366239149e-01;
    const LG4: f64 = 2.222219843214978396e-01;
    const LG5: f64 = 1.818357216161805012e-01;
    const LG6: f64 = 1.531383769920937332e-01;
    const LG7: f64 = 1.479819860511658591e-01;
    // x = 2^k·z with z in [√2/2, √2): shift the exponent field so that the split falls at
    // the bits of √2/2 (musl's OFF = 0x3fe6955500000000), with unsigned arithmetic only.
    const SHIFT: u64 = 0x3ff0_0000_0000_0000 - 0x3fe6_9555_0000_0000;
    let ix = x.to_bits();
    let kb = (ix + SHIFT) >> 52; // k + 1023
    let z = f64::from_bits(ix.wrapping_sub(kb << 52).wrapping_add(1023 << 52));
    let k = f64::from_bits(0x4330_0000_0000_0000 | kb) - (4_503_599_627_370_496.0 + 1023.0);
    let f = z - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let s2 = s * s;
    let w = s2 * s2;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = s2 * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    s * (hfsq + r) + k * LN2_LO - hfsq + f + k * LN2_HI
}

/// (sin θ, cos θ) for 0 ≤ θ < 2π + π/4 (fdlibm's kernels after a two-part Cody–Waite
/// reduction by π/2; the quadrant is chosen without branches).
#[inline(always)]
#[allow(clippy::excessive_precision, clippy::approx_constant)] // fdlibm's constants, digit for digit
fn sincos_poly(theta: f64) -> (f64, f64) {
    const TWO_OVER_PI: f64 = 6.36619772367581382433e-01;
    const PIO2_1: f64 = 1.57079632673412561417e+00; // first 33 bits of π/2
    const PIO2_1T: f64 = 6.07710050650619224932e-11; // π/2 − PIO2_1
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵²: x + ROUND − ROUND rounds x
    const S1: f64 = -1.66666666666666324348e-01;
    const S2: f64 = 8.33333333332248946124e-03;
    const S3: f64 = -1.98412698298579493134e-04;
    const S4: f64 = 2.75573137070700676789e-06;
    const S5: f64 = -2.50507602534068634195e-08;
    const S6: f64 = 1.58969099521155010221e-10;
    const C1: f64 = 4.16666666666666019037e-02;
    const C2: f64 = -1.38888888888741095749e-03;
    const C3: f64 = 2.48015872894767294178e-05;
    const C4: f64 = -2.75573143513906633035e-07;
    const C5: f64 = 2.08757232129817482790e-09;
    const C6: f64 = -1.13596475577881948265e-11;
    let shifted = theta * TWO_OVER_PI + ROUND;
    let quadrant = shifted.to_bits() & 3;
    let q = shifted - ROUND;
    let x = (theta - q * PIO2_1) - q * PIO2_1T;
    let z = x * x;
    let v = z * x;
    let rs = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    let sin = x + v * (S1 + z * rs);
    let rc = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos = w + (((1.0 - w) - hz) + z * rc);
    // θ = qπ/2 + x: quadrant 1 → (cos x, −sin x), 2 → (−sin x, −cos x), 3 → (−cos x, sin x)
    let (a, b) = if quadrant & 1 == 1 { (cos, sin) } else { (sin, cos) };
    let sa = if quadrant & 2 == 2 { -a } else { a };
    let sb = if (quadrant + 1) & 2 == 2 { -b } else { b };
    (sa, sb)
}

#[inline(always)]
fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = (-2.0 * ln_poly(u1)).sqrt();
    let (s, c) = sincos_poly(std::f64::consts::TAU * u2);
    (r * c, r * s)
}

/// The four standard normals of block `block` of the (seed, step, stream) sequence.
#[inline]
pub fn normal_block(seed: u64, step: u64, stream: u64, block: u64) -> [f64; 4] {
    let w = philox4x64_10([block, step, stream, 0], [seed, 0]);
    let (z0, z1) = box_muller(radius_uniform(w[0]), angle_uniform(w[1]));
    let (z2, z3) = box_muller(radius_uniform(w[2]), angle_uniform(w[3]));
    [z0, z1, z2, z3]
}

/// Philox blocks per batch of the bulk path of `fill_normals`.
const BATCH: usize = 256;

/// Box–Muller over arrays: out[2p], out[2p + 1] from (u1[p], u2[p]).
#[inline(always)]
fn box_muller_body(u1: &[f64], u2: &[f64], out: &mut [f64]) {
    for ((o, &a), &b) in out.chunks_exact_mut(2).zip(u1).zip(u2) {
        let (c, s) = box_muller(a, b);
        o[0] = c;
        o[1] = s;
    }
}

struct BoxMuller<'a> {
    u1: &'a [f64],
    u2: &'a [f64],
    out: &'a mut [f64],
}

impl simd::Kernel for BoxMuller<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        box_muller_body(self.u1, self.u2, self.out)
    }
}

/// Fill `out` (4·blocks values) with the normals of the consecutive blocks `first ..`:
/// Philox words turned into uniforms (scalar: 64×64-bit products), then a vectorised
/// Box–Muller over the batch. A block none of whose normals `need(i)` (i indexes `out`) skips
/// Philox and gets the uniforms (1, 0), so the normals 0.
#[inline(always)]
fn fill_blocks(seed: u64, step: u64, stream: u64, first: u64, out: &mut [f64], need: impl Fn(usize) -> bool) {
    let mut u1 = [0.0f64; 2 * BATCH];
    let mut u2 = [0.0f64; 2 * BATCH];
    for (b, chunk) in out.chunks_mut(4 * BATCH).enumerate() {
        let blocks = chunk.len() / 4;
        let base = first + (b * BATCH) as u64;
        for j in 0..blocks {
            let at = 4 * (b * BATCH + j);
            let wanted = need(at) || need(at + 1) || need(at + 2) || need(at + 3);
            let [a, b, c, d] =
                if wanted { block_uniforms(base + j as u64, step, stream, seed) } else { [1.0, 0.0, 1.0, 0.0] };
            u1[2 * j] = a;
            u2[2 * j] = b;
            u1[2 * j + 1] = c;
            u2[2 * j + 1] = d;
        }
        simd::dispatch(BoxMuller { u1: &u1[..2 * blocks], u2: &u2[..2 * blocks], out: chunk });
    }
}

/// Fill `out` with normals `start .. start + out.len()` of the (seed, step, stream) sequence.
pub fn fill_normals(seed: u64, step: u64, stream: u64, start: u64, out: &mut [f64]) {
    fill_normals_where(seed, step, stream, start, out, |_| true);
}

/// `fill_normals` for the normals out[i] with `need(i)`: the others are left unspecified (0 or
/// the true normal), which saves the Philox blocks of normals nobody reads (the particles that
/// have left); the needed ones have the same bits as from `fill_normals`.
pub fn fill_normals_where(
    seed: u64,
    step: u64,
    stream: u64,
    start: u64,
    out: &mut [f64],
    need: impl Fn(usize) -> bool,
) {
    // a partial leading block, whole blocks in bulk, a partial trailing block
    let lead = (((4 - start % 4) % 4) as usize).min(out.len());
    if lead > 0 {
        let block = normal_block(seed, step, stream, start / 4);
        let first = (start % 4) as usize;
        out[..lead].copy_from_slice(&block[first..first + lead]);
    }
    let rest = &mut out[lead..];
    let whole = rest.len() / 4 * 4;
    let (bulk, tail) = rest.split_at_mut(whole);
    let first_block = (start + lead as u64) / 4;
    fill_blocks(seed, step, stream, first_block, bulk, |i| need(lead + i));
    if !tail.is_empty() {
        let block = normal_block(seed, step, stream, first_block + (whole / 4) as u64);
        tail.copy_from_slice(&block[..tail.len()]);
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
    fn ln_and_sincos_agree_with_std_to_an_ulp_or_two() {
        let mut worst_ln = 0.0f64;
        let mut worst_trig = 0.0f64;
        for i in 0..200_000u64 {
            let w = philox4x64_10([i, 1, 2, 0], [3, 0]);
            for &x in &[radius_uniform(w[0]), radius_uniform(w[1] >> (w[2] % 60)), 1.0, TWO_POW_M53] {
                let (a, b) = (ln_poly(x), x.ln());
                worst_ln = worst_ln.max((a - b).abs() / b.abs().max(f64::MIN_POSITIVE));
            }
            for &u in &[angle_uniform(w[3]), (i % 8) as f64 / 8.0, 0.25 - TWO_POW_M53, 1.0 - TWO_POW_M53] {
                let t = std::f64::consts::TAU * u;
                let (s, c) = sincos_poly(t);
                worst_trig = worst_trig.max((s - t.sin()).abs()).max((c - t.cos()).abs());
            }
        }
        assert!(worst_ln <= 4.5e-16, "ln: {worst_ln:e}");
        assert!(worst_trig <= 4.5e-16, "sin/cos: {worst_trig:e}");
    }

    #[test]
    fn batched_normals_equal_single_blocks() {
        let mut z = vec![0.0; 4 * (BATCH + 3)];
        fill_normals(5, 6, 7, 0, &mut z);
        for b in 0..BATCH + 3 {
            assert_eq!(&z[4 * b..4 * b + 4], &normal_block(5, 6, 7, b as u64)[..]);
        }
    }

    #[test]
    fn the_needed_normals_are_those_of_fill_normals() {
        let mut all = vec![0.0; 4 * BATCH + 37];
        fill_normals(5, 6, 7, 3, &mut all);
        let need = |i: usize| i % 11 == 0 || (100..140).contains(&i);
        let mut some = vec![f64::NAN; all.len()];
        fill_normals_where(5, 6, 7, 3, &mut some, need);
        for (i, (a, b)) in all.iter().zip(&some).enumerate() {
            assert!(!need(i) || a.to_bits() == b.to_bits(), "{i}");
        }
        assert!(some.iter().filter(|v| **v == 0.0).count() > all.len() / 2);
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
