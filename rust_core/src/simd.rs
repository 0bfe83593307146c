//! The one home of run-time SIMD dispatch: CPU feature detection and the [`Kernel`] trait.
//!
//! A hot loop is written once, as an `#[inline(always)]` body, and handed to [`dispatch`]
//! wrapped in a small argument struct that implements [`Kernel`]. `dispatch` runs it inside
//! [`run_avx512`] or [`run_avx2`] — the only two `#[target_feature]` functions of the crate —
//! when the CPU has those features, else as plain x86-64 (SSE2) code. `Kernel::run` is
//! `#[inline(always)]`, so each monomorphised copy of a runner compiles the body with that
//! runner's vector width.
//!
//! Bit-identity: the copies differ only in vector width, never in arithmetic (Rust does not
//! contract a·b + c into FMA, and the bodies keep their reductions in fixed lanes), so every
//! CPU, and every copy, gives the same bits.

/// Whether this CPU runs AVX2 (checked once, then cached by std).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU runs AVX-512F (as `has_avx2`).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// A hot loop with its arguments, run by [`dispatch`] with the widest vectors the CPU has.
///
/// Implement `run` as `#[inline(always)]` (it is inlined into the `#[target_feature]`
/// runners; an out-of-line `run` would silently lose the wide copies).
pub trait Kernel {
    type Output;
    /// Whether an AVX-512 copy is wanted (some loops are no faster with it: they stop at AVX2).
    const AVX512: bool = true;
    fn run(self) -> Self::Output;
}

/// `k.run()` compiled with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run()
}

/// `k.run()` compiled with AVX2 (which implies SSE4.1's rounding instructions for `floor`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run()
}

/// `k.run()` with the widest vector code the CPU supports (same arithmetic on every path).
#[inline]
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if K::AVX512 && has_avx512() {
            // SAFETY: AVX-512F support was checked at run time just above.
            return unsafe { run_avx512(k) };
        }
        if has_avx2() {
            // SAFETY: AVX2 support was checked at run time just above.
            return unsafe { run_avx2(k) };
        }
    }
    k.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sum<'a>(&'a [f64]);

    impl Kernel for Sum<'_> {
        type Output = f64;
        #[inline(always)]
        fn run(self) -> f64 {
            let mut acc = [0.0f64; 4];
            for c in self.0.chunks_exact(4) {
                for j in 0..4 {
                    acc[j] += c[j];
                }
            }
            acc.iter().sum::<f64>() + self.0.chunks_exact(4).remainder().iter().sum::<f64>()
        }
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let x: Vec<f64> = (0..1003).map(|i| (i as f64 * 0.37).sin() * 1e3).collect();
        let want = Sum(&x).run();
        assert_eq!(dispatch(Sum(&x)).to_bits(), want.to_bits());
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                // SAFETY: checked just above.
                assert_eq!(unsafe { run_avx2(Sum(&x)) }.to_bits(), want.to_bits());
            }
            if has_avx512() {
                // SAFETY: checked just above.
                assert_eq!(unsafe { run_avx512(Sum(&x)) }.to_bits(), want.to_bits());
            }
        }
    }
}
