//! mfg_ensemble's Rust kernels. The numerical modules are pure functions over slices, one per
//! NumPy reference module of mfg_ensemble/kernels/reference/ (same stems: weno, hjb, banded, fv,
//! particles, kde, rng, substeps), where each kernel's maths is written; `boundary`, `error`
//! and `simd` are their shared plumbing. This file holds only the PyO3 bindings (feature
//! "python", on in maturin builds): arguments converted by the `FromPyObject` types of
//! `convert`, the GIL released, the kernel called, its `KernelError` raised as `ValueError`.

pub mod banded;
pub mod boundary;
#[cfg(feature = "python")]
mod convert;
pub mod error;
pub mod fv;
pub mod fv2d;
pub mod grid2d;
pub mod hjb;
pub mod hjb2d;
pub mod kde;
pub mod particles;
pub mod rng;
pub mod simd;
pub mod substeps;
pub mod weno;

#[cfg(feature = "python")]
mod bindings {
    use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
    use pyo3::prelude::*;

    use crate::boundary::Boundary;
    use crate::convert::{array2, march_to_py, slice, slice2, Bc, KdeBcs, MarchBcs, MarchOut, MinSubsteps, WenoBcs};
    use crate::hjb::Scheme;
    use crate::kde::{self as density, Method};
    use crate::weno::Variant;
    use crate::{fv, hjb, particles, rng, weno};

    type Array1Pair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

    // The choice defaults are Rust values, so each signature's text is given as Python shows it.

    #[pyfunction]
    fn smoothness_indicators<'py>(
        py: Python<'py>,
        u: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let u = slice(&u);
        let betas = py.detach(|| weno::smoothness_indicators(&u))?;
        array2(py, betas, 3, u.len() - 4)
    }

    #[pyfunction]
    #[pyo3(
        signature = (u, dx, bc=Bc::new(Boundary::Periodic), variant=Variant::Js, eps=1e-6),
        text_signature = "(u, dx, bc=\"periodic\", variant=\"js\", eps=1e-6)"
    )]
    fn weno5_derivatives<'py>(
        py: Python<'py>,
        u: PyReadonlyArray1<'py, f64>,
        dx: f64,
        bc: Bc<WenoBcs>,
        variant: Variant,
        eps: f64,
    ) -> PyResult<Array1Pair<'py>> {
        let u = slice(&u);
        let (dm, dp) = py.detach(|| weno::weno5_derivatives(&u, dx, bc.0, variant, eps))?;
        Ok((dm.into_pyarray(py), dp.into_pyarray(py)))
    }

    #[pyfunction]
    #[pyo3(
        signature = (particles, grid, bandwidth, method=Method::Exact, bc=Bc::new(Boundary::Reflect)),
        text_signature = "(particles, grid, bandwidth, method=\"exact\", bc=\"reflect\")"
    )]
    fn kde<'py>(
        py: Python<'py>,
        particles: PyReadonlyArray1<'py, f64>,
        grid: PyReadonlyArray1<'py, f64>,
        bandwidth: f64,
        method: Method,
        bc: Bc<KdeBcs>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let kernel = match method {
            Method::Exact => density::kde_exact,
            Method::Binned => density::kde_binned,
        };
        let (p, g) = (slice(&particles), slice(&grid));
        let density = py.detach(|| kernel(&p, &g, bandwidth, bc.0))?;
        Ok(density.into_pyarray(py))
    }

    #[pyfunction]
    #[pyo3(
        signature = (x, drift, dt, sigma, *, lo, hi, seed, step, bc=Bc::new(Boundary::Reflect)),
        text_signature = "(x, drift, dt, sigma, *, lo, hi, seed, step, bc=\"reflect\")"
    )]
    #[allow(clippy::too_many_arguments)]
    fn evolve_particles<'py>(
        py: Python<'py>,
        x: PyReadonlyArray1<'py, f64>,
        drift: PyReadonlyArray1<'py, f64>,
        dt: f64,
        sigma: f64,
        lo: f64,
        hi: f64,
        seed: u64,
        step: u64,
        bc: Bc<MarchBcs>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let params = particles::Step { dt, sigma, lo, hi, seed, step, bc: bc.0 };
        let (x, drift) = (slice(&x), slice(&drift));
        let out = py.detach(|| particles::evolve_particles(&x, &drift, &params))?;
        Ok(out.into_pyarray(py))
    }

    /// u (nt, nx) of the HJB equation backward from g for the running cost f (nt, nx).
    #[pyfunction]
    #[pyo3(
        signature = (f, g, *, dx, sigma, T, bc=Bc::new(Boundary::Reflect), variant=Variant::Js, eps=1e-6, cfl=0.4, min_substeps=None, scheme=Scheme::Imex),
        text_signature = "(f, g, *, dx, sigma, T, bc=\"reflect\", variant=\"js\", eps=1e-6, cfl=0.4, min_substeps=None, scheme=\"imex\")"
    )]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn hjb_backward<'py>(
        py: Python<'py>,
        f: PyReadonlyArray2<'py, f64>,
        g: PyReadonlyArray1<'py, f64>,
        dx: f64,
        sigma: f64,
        T: f64,
        bc: Bc<MarchBcs>,
        variant: Variant,
        eps: f64,
        cfl: f64,
        min_substeps: Option<MinSubsteps>,
        scheme: Scheme,
    ) -> PyResult<MarchOut<'py>> {
        let params = hjb::HjbParams { dx, sigma, horizon: T, bc: bc.0, variant, eps, cfl, scheme };
        let (f, nt, _) = slice2(&f);
        let g = slice(&g);
        let floor = min_substeps.map(|m| m.0);
        let march = py.detach(|| hjb::hjb_backward(&f, &g, nt, &params, floor.as_deref()))?;
        march_to_py(py, march, nt, g.len())
    }

    /// m (nt, nx) of the finite-volume Fokker–Planck march from m0 with the drift −∂x u.
    #[pyfunction]
    #[pyo3(
        signature = (u, m0, *, dx, sigma, T, bc=Bc::new(Boundary::Reflect), cfl=0.9, min_substeps=None, scheme=fv::FvScheme::Muscl2),
        text_signature = "(u, m0, *, dx, sigma, T, bc=\"reflect\", cfl=0.9, min_substeps=None, scheme=\"muscl2\")"
    )]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn fv_forward<'py>(
        py: Python<'py>,
        u: PyReadonlyArray2<'py, f64>,
        m0: PyReadonlyArray1<'py, f64>,
        dx: f64,
        sigma: f64,
        T: f64,
        bc: Bc<MarchBcs>,
        cfl: f64,
        min_substeps: Option<MinSubsteps>,
        scheme: fv::FvScheme,
    ) -> PyResult<MarchOut<'py>> {
        let params = fv::FvParams { dx, sigma, horizon: T, bc: bc.0, cfl, scheme };
        let (u, nt, _) = slice2(&u);
        let m0 = slice(&m0);
        let floor = min_substeps.map(|m| m.0);
        let march = py.detach(|| fv::fv_forward(&u, &m0, nt, &params, floor.as_deref()))?;
        march_to_py(py, march, nt, m0.len())
    }

    /// m (nt, nx): particles from x0 moved by −∂x u, density by KDE at every output time.
    // `rule` stays a plain string: it is read (and checked) only when `bandwidth` is None.
    #[pyfunction]
    #[pyo3(
        signature = (x0, u, grid, *, sigma, T, lo, hi, seed, bc=Bc::new(Boundary::Reflect), method=Method::Binned, bandwidth=None, rule="scott", min_substeps=None),
        text_signature = "(x0, u, grid, *, sigma, T, lo, hi, seed, bc=\"reflect\", method=\"binned\", bandwidth=None, rule=\"scott\", min_substeps=None)"
    )]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn particles_forward<'py>(
        py: Python<'py>,
        x0: PyReadonlyArray1<'py, f64>,
        u: PyReadonlyArray2<'py, f64>,
        grid: PyReadonlyArray1<'py, f64>,
        sigma: f64,
        T: f64,
        lo: f64,
        hi: f64,
        seed: u64,
        bc: Bc<MarchBcs>,
        method: Method,
        bandwidth: Option<f64>,
        rule: &str,
        min_substeps: Option<MinSubsteps>,
    ) -> PyResult<MarchOut<'py>> {
        let bandwidth = match bandwidth {
            Some(h) => density::Bandwidth::Fixed(h),
            None => density::Bandwidth::parse(rule)?,
        };
        let params = particles::ForwardParams { sigma, horizon: T, lo, hi, bc: bc.0, seed, method, bandwidth };
        let (u, nt, _) = slice2(&u);
        let (x0, grid) = (slice(&x0), slice(&grid));
        let floor = min_substeps.map(|m| m.0);
        let march = py.detach(|| particles::particles_forward(&x0, &u, &grid, nt, &params, floor.as_deref()))?;
        march_to_py(py, march, nt, grid.len())
    }

    /// Normals `start .. start + n` of the Philox sequence (seed, step, stream).
    #[pyfunction]
    #[pyo3(signature = (seed, step, stream, n, start=0))]
    fn philox_normals<'py>(
        py: Python<'py>,
        seed: u64,
        step: u64,
        stream: u64,
        n: usize,
        start: u64,
    ) -> Bound<'py, PyArray1<f64>> {
        let mut out = vec![0.0; n];
        py.detach(|| rng::fill_normals(seed, step, stream, start, &mut out));
        out.into_pyarray(py)
    }

    // --- 2-D HJB (issue 12; hjb2d) ---
    /// u (nt, ny·nx) of the 2-D HJB equation backward from g (ny, nx) for f (nt, ny, nx); the
    /// facade reshapes it to (nt, ny, nx).
    #[pyfunction]
    #[pyo3(
        signature = (f, g, *, dx, dy, sigma, T, bc, nodes, variant, eps, cfl, min_substeps=None),
        text_signature = "(f, g, *, dx, dy, sigma, T, bc, nodes, variant, eps, cfl, min_substeps=None)"
    )]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn hjb_backward_2d<'py>(
        py: Python<'py>,
        f: numpy::PyReadonlyArray3<'py, f64>,
        g: PyReadonlyArray2<'py, f64>,
        dx: f64,
        dy: f64,
        sigma: f64,
        T: f64,
        bc: (Bc<MarchBcs>, Bc<MarchBcs>),
        nodes: PyReadonlyArray2<'py, u8>,
        variant: Variant,
        eps: f64,
        cfl: f64,
        min_substeps: Option<MinSubsteps>,
    ) -> PyResult<MarchOut<'py>> {
        let params = crate::hjb2d::Hjb2dParams { dx, dy, sigma, horizon: T, bc: [bc.0 .0, bc.1 .0], variant, eps, cfl };
        let (nt, ny, nx) = f.as_array().dim();
        let f: Vec<f64> = f.as_array().iter().copied().collect();
        let (g, _, _) = slice2(&g);
        let nodes: Vec<u8> = nodes.as_array().iter().copied().collect();
        let floor = min_substeps.map(|m| m.0);
        let march =
            py.detach(|| crate::hjb2d::hjb_backward_2d(&f, &g, &nodes, nt, ny, nx, &params, floor.as_deref()))?;
        march_to_py(py, march, nt, ny * nx)
    }

    /// Size of Rayon's global pool (RAYON_NUM_THREADS, else the number of cores). Builds the
    /// pool if no kernel has yet.
    #[pyfunction]
    fn rayon_threads() -> usize {
        rayon::current_num_threads()
    }

    /// Build Rayon's global pool with `n` threads; false if it was built already (a kernel or
    /// `rayon_threads` ran first: the pool is sized once per process).
    #[pyfunction]
    fn init_rayon(n: usize) -> bool {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().is_ok()
    }

    // -- 2-D finite-volume Fokker–Planck (fv2d) ------------------------------------------------

    /// m (nt, ny, nx), sub-steps (nt − 1,) and exited mass (nt,) of the 2-D finite-volume
    /// Fokker–Planck march from m0 (ny, nx) with the drift −∇u, in the room of `nodes`.
    #[pyfunction]
    #[pyo3(
        signature = (u, m0, *, dx, dy, sigma, T, bc=(Bc::new(Boundary::Reflect), Bc::new(Boundary::Reflect)), nodes=None, cfl=0.9, min_substeps=None),
        text_signature = "(u, m0, *, dx, dy, sigma, T, bc=(\"reflect\", \"reflect\"), nodes=None, cfl=0.9, min_substeps=None)"
    )]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn fv_forward_2d<'py>(
        py: Python<'py>,
        u: numpy::PyReadonlyArray3<'py, f64>,
        m0: PyReadonlyArray2<'py, f64>,
        dx: f64,
        dy: f64,
        sigma: f64,
        T: f64,
        bc: (Bc<MarchBcs>, Bc<MarchBcs>),
        nodes: Option<PyReadonlyArray2<'py, u8>>,
        cfl: f64,
        min_substeps: Option<MinSubsteps>,
    ) -> PyResult<crate::convert::March2dOut<'py>> {
        use crate::convert::{march2d_to_py, slice2_u8, slice3};
        let params = crate::fv2d::Fv2dParams { dx, dy, sigma, horizon: T, bc_x: bc.0 .0, bc_y: bc.1 .0, cfl };
        let (u, shape) = slice3(&u);
        let (m0, _, _) = slice2(&m0);
        let kinds = nodes.as_ref().map(slice2_u8);
        let floor = min_substeps.map(|m| m.0);
        let [nt, ny, nx] = shape;
        let out =
            py.detach(|| crate::fv2d::fv_forward_2d(&u, &m0, kinds.as_deref(), nt, ny, nx, &params, floor.as_deref()))?;
        march2d_to_py(py, out, shape)
    }

    #[pymodule]
    fn _rust_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // "release" or "debug" (maturin develop): benchmarks say which build they timed
        m.add("build_profile", if cfg!(debug_assertions) { "debug" } else { "release" })?;
        m.add_function(wrap_pyfunction!(smoothness_indicators, m)?)?;
        m.add_function(wrap_pyfunction!(weno5_derivatives, m)?)?;
        m.add_function(wrap_pyfunction!(kde, m)?)?;
        m.add_function(wrap_pyfunction!(evolve_particles, m)?)?;
        m.add_function(wrap_pyfunction!(hjb_backward, m)?)?;
        m.add_function(wrap_pyfunction!(fv_forward, m)?)?;
        m.add_function(wrap_pyfunction!(particles_forward, m)?)?;
        m.add_function(wrap_pyfunction!(philox_normals, m)?)?;
        m.add_function(wrap_pyfunction!(rayon_threads, m)?)?;
        m.add_function(wrap_pyfunction!(init_rayon, m)?)?;
        m.add_function(wrap_pyfunction!(hjb_backward_2d, m)?)?;
        m.add_function(wrap_pyfunction!(fv_forward_2d, m)?)?;
        Ok(())
    }
}
