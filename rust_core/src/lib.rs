//! mfg_ensemble's Rust kernels. The numerical modules are pure functions over slices, one per
//! NumPy reference module of mfg_ensemble/kernels/reference/ (same stems: weno, hjb, banded, fv,
//! particles, kde, rng, substeps; in 2-D grid2d, hjb2d, fv2d, particles2d, kde2d), where each
//! kernel's maths is written; `boundary`, `error`
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
pub mod kde2d;
pub mod particles;
pub mod particles2d;
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

    /// `kernel()` with the GIL released, on a Rayon worker: a kernel's parallel loops (one or
    /// more per time step) then start without the hand-over from the calling thread, which
    /// cost a futex wake and wait per loop, most of a one-thread march's time in small loops.
    fn compute<T: Send>(py: Python<'_>, kernel: impl FnOnce() -> T + Send) -> T {
        py.detach(|| rayon::scope(|_| kernel()))
    }

    // The choice defaults are Rust values, so each signature's text is given as Python shows it.

    #[pyfunction]
    fn smoothness_indicators<'py>(
        py: Python<'py>,
        u: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let u = slice(&u);
        let betas = compute(py, || weno::smoothness_indicators(&u))?;
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
        let (dm, dp) = compute(py, || weno::weno5_derivatives(&u, dx, bc.0, variant, eps))?;
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
        let density = compute(py, || kernel(&p, &g, bandwidth, bc.0))?;
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
        let out = compute(py, || particles::evolve_particles(&x, &drift, &params))?;
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
        let march = compute(py, || hjb::hjb_backward(&f, &g, nt, &params, floor.as_deref()))?;
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
        let march = compute(py, || fv::fv_forward(&u, &m0, nt, &params, floor.as_deref()))?;
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
        let march = compute(py, || particles::particles_forward(&x0, &u, &grid, nt, &params, floor.as_deref()))?;
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
        compute(py, || rng::fill_normals(seed, step, stream, start, &mut out));
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
        use crate::convert::{slice2_u8, slice3};
        let params = crate::hjb2d::Hjb2dParams { dx, dy, sigma, horizon: T, bc: [bc.0 .0, bc.1 .0], variant, eps, cfl };
        let (f, [nt, ny, nx]) = slice3(&f);
        let (g, _, _) = slice2(&g);
        let nodes = slice2_u8(&nodes);
        let floor = min_substeps.map(|m| m.0);
        let march =
            compute(py, || crate::hjb2d::hjb_backward_2d(&f, &g, &nodes, nt, ny, nx, &params, floor.as_deref()))?;
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
        let out = compute(py, || {
            crate::fv2d::fv_forward_2d(&u, &m0, kinds.as_deref(), nt, ny, nx, &params, floor.as_deref())
        })?;
        march2d_to_py(py, out, shape)
    }

    // -- 2-D particles and KDE (issue 12): kde2d.rs, particles2d.rs ------------------------------

    /// Per-dimension boundary conditions, as the facade checked them.
    type Bc2 = (Bc<MarchBcs>, Bc<MarchBcs>);

    /// The node kinds (ny, nx) as a slice, copied only when not C-contiguous.
    fn kinds_slice<'a>(a: &'a numpy::PyReadonlyArray2<'_, u8>) -> std::borrow::Cow<'a, [u8]> {
        match a.as_slice() {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => std::borrow::Cow::Owned(a.as_array().iter().copied().collect()),
        }
    }

    /// m (ny, nx): the 2-D KDE of `particles` (n, 2) on the axes (lo, d, n) with bandwidths (hx, hy).
    #[pyfunction]
    #[pyo3(signature = (particles, x_axis, y_axis, bandwidth, method, bc, kinds))]
    #[allow(clippy::too_many_arguments)]
    fn kde_2d<'py>(
        py: Python<'py>,
        particles: PyReadonlyArray2<'py, f64>,
        x_axis: (f64, f64, usize),
        y_axis: (f64, f64, usize),
        bandwidth: (f64, f64),
        method: Method,
        bc: Bc2,
        kinds: numpy::PyReadonlyArray2<'py, u8>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        use crate::kde2d::Axis;
        let ax = Axis { lo: x_axis.0, d: x_axis.1, n: x_axis.2, bc: bc.0 .0 };
        let ay = Axis { lo: y_axis.0, d: y_axis.1, n: y_axis.2, bc: bc.1 .0 };
        let (p, _, _) = slice2(&particles);
        let kinds = kinds_slice(&kinds);
        let m = compute(py, || crate::kde2d::kde_2d(&p, &ax, &ay, bandwidth, method, &kinds))?;
        array2(py, m, ay.n, ax.n)
    }

    /// The 2-D particle march: (m (nt, ny·nx), counts, exited (nt,), None or (positions (n, 2),
    /// alive (n,), weights (n,))).
    #[pyfunction]
    #[pyo3(signature = (x0, u, *, lo, hi, sigma, T, seed, bc, kinds, method, bandwidth, min_substeps=None, positions=false))]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn particles_forward_2d<'py>(
        py: Python<'py>,
        x0: PyReadonlyArray2<'py, f64>,
        u: numpy::PyReadonlyArray3<'py, f64>,
        lo: (f64, f64),
        hi: (f64, f64),
        sigma: f64,
        T: f64,
        seed: u64,
        bc: Bc2,
        kinds: numpy::PyReadonlyArray2<'py, u8>,
        method: Method,
        bandwidth: &Bound<'py, PyAny>,
        min_substeps: Option<MinSubsteps>,
        positions: bool,
    ) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
        use crate::particles2d::{self as p2d, Bandwidth2};
        let bandwidth = match bandwidth.extract::<(f64, f64)>() {
            Ok((hx, hy)) => Bandwidth2::Fixed(hx, hy),
            Err(_) => {
                let rule: String = bandwidth.extract()?;
                density::Bandwidth::parse(&rule)?;
                Bandwidth2::Rule
            }
        };
        let (nt, ny, nx) = u.as_array().dim();
        let u = match u.as_slice() {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => std::borrow::Cow::Owned(u.as_array().iter().copied().collect()),
        };
        let (x0, n, _) = slice2(&x0);
        let kinds = kinds_slice(&kinds);
        let params = p2d::Forward2dParams {
            lo: [lo.0, lo.1],
            hi: [hi.0, hi.1],
            sigma,
            horizon: T,
            seed,
            bc: [bc.0 .0, bc.1 .0],
            method,
            bandwidth,
        };
        let floor = min_substeps.map(|m| m.0);
        let out = compute(py, || p2d::particles_forward_2d(&x0, &u, nt, ny, nx, &kinds, &params, floor.as_deref()))?;
        let march = crate::substeps::Marching { values: out.values, substeps: out.substeps, diverged: out.diverged };
        let (m, counts) = march_to_py(py, march, nt, ny * nx)?;
        let exited = out.exited.into_pyarray(py);
        let extra = if positions {
            let alive = numpy::PyArray1::from_vec(py, out.alive).into_any();
            let weights = out.weights.into_pyarray(py).into_any();
            Some((array2(py, out.positions, n, 2)?, alive, weights))
        } else {
            None
        };
        pyo3::types::PyTuple::new(
            py,
            [m.into_any(), counts.into_any(), exited.into_any(), extra.into_pyobject(py)?.into_any()],
        )
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
        m.add_function(wrap_pyfunction!(kde_2d, m)?)?;
        m.add_function(wrap_pyfunction!(particles_forward_2d, m)?)?;
        Ok(())
    }
}
