//! mfg_ensemble's Rust kernels. The numerical modules are pure functions over slices;
//! this file holds only the PyO3 bindings (feature "python", on in maturin builds):
//! convert, validate, release the GIL, call, and turn `KernelError` into `ValueError`.

pub mod boundary;
pub mod error;
pub mod fv;
pub mod hjb;
pub mod kde;
pub mod particles;
pub mod rng;
pub mod sweep;
pub mod weno;

#[cfg(feature = "python")]
mod bindings {
    use std::borrow::Cow;

    use numpy::ndarray::Array2;
    use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
    use pyo3::exceptions::{PyFloatingPointError, PyValueError};
    use pyo3::prelude::*;

    use crate::boundary::Boundary;
    use crate::error::KernelError;
    use crate::sweep::{self, Sweep};
    use crate::{fv, hjb, kde, particles, rng, weno};

    type Array1Pair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);
    type SweepOut<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<i64>>);
    const SOLVER_BCS: [Boundary; 2] = [Boundary::Reflect, Boundary::Periodic];

    fn to_py(e: KernelError) -> PyErr {
        PyValueError::new_err(e.0)
    }

    /// A 2-D array's data (row-major) and its shape, copied only when not C-contiguous.
    fn slice2<'a>(a: &'a PyReadonlyArray2<'_, f64>) -> (Cow<'a, [f64]>, usize, usize) {
        let (rows, cols) = a.as_array().dim();
        let data = match a.as_slice() {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(a.as_array().iter().copied().collect()),
        };
        (data, rows, cols)
    }

    /// (values (nt, nx), sub-steps per output interval (nt − 1,) as int64) of a sweep, or
    /// FloatingPointError if it diverged.
    fn sweep_to_py(py: Python<'_>, sweep: Sweep, nt: usize, nx: usize) -> PyResult<SweepOut<'_>> {
        if let Some(reason) = sweep.diverged {
            return Err(PyFloatingPointError::new_err(reason));
        }
        let values = Array2::from_shape_vec((nt, nx), sweep.values).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let counts: Vec<i64> = sweep.substeps.iter().map(|&k| k as i64).collect();
        Ok((values.into_pyarray(py), counts.into_pyarray(py)))
    }

    /// The optional `min_substeps` argument as checked floors: a sequence of integers (a list or
    /// an integer array), each in [1, MAX_SUBSTEPS]; anything else is a ValueError. The length is
    /// checked by the kernel.
    fn floor_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<usize>>> {
        let Some(value) = value.filter(|v| !v.is_none()) else {
            return Ok(None);
        };
        let ints: Vec<i64> = value.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "min_substeps must be None or a sequence of integers, got {}",
                value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
            ))
        })?;
        sweep::floors_from_i64(&ints).map(Some).map_err(to_py)
    }

    /// The array's data as a slice, copied only when it is not contiguous.
    fn slice<'a>(a: &'a PyReadonlyArray1<'_, f64>) -> Cow<'a, [f64]> {
        match a.as_slice() {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(a.as_array().to_vec()),
        }
    }

    #[pyfunction]
    fn smoothness_indicators<'py>(
        py: Python<'py>,
        u: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let u = slice(&u);
        let n = u.len();
        let flat = py.detach(|| weno::smoothness_indicators(&u)).map_err(to_py)?;
        let out = Array2::from_shape_vec((3, n - 4), flat).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(out.into_pyarray(py))
    }

    #[pyfunction]
    #[pyo3(signature = (u, dx, bc="periodic", variant="js", eps=1e-6))]
    fn weno5_derivatives<'py>(
        py: Python<'py>,
        u: PyReadonlyArray1<'py, f64>,
        dx: f64,
        bc: &str,
        variant: &str,
        eps: f64,
    ) -> PyResult<Array1Pair<'py>> {
        let bc = Boundary::parse(bc, &[Boundary::Periodic, Boundary::Reflect]).map_err(to_py)?;
        let variant = weno::Variant::parse(variant).map_err(to_py)?;
        let u = slice(&u);
        let (dm, dp) = py
            .detach(|| weno::weno5_derivatives(&u, dx, bc, variant, eps))
            .map_err(to_py)?;
        Ok((dm.into_pyarray(py), dp.into_pyarray(py)))
    }

    #[pyfunction]
    #[pyo3(name = "kde", signature = (particles, grid, bandwidth, method="exact", bc="reflect"))]
    fn kde_density<'py>(
        py: Python<'py>,
        particles: PyReadonlyArray1<'py, f64>,
        grid: PyReadonlyArray1<'py, f64>,
        bandwidth: f64,
        method: &str,
        bc: &str,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let bc = Boundary::parse(bc, &[Boundary::Reflect, Boundary::Open, Boundary::Periodic]).map_err(to_py)?;
        let kernel = match kde::Method::parse(method).map_err(to_py)? {
            kde::Method::Exact => kde::kde_exact,
            kde::Method::Binned => kde::kde_binned,
        };
        let (p, g) = (slice(&particles), slice(&grid));
        let density = py.detach(|| kernel(&p, &g, bandwidth, bc)).map_err(to_py)?;
        Ok(density.into_pyarray(py))
    }

    #[pyfunction]
    #[pyo3(signature = (x, drift, dt, sigma, *, lo, hi, seed, step, bc="reflect"))]
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
        bc: &str,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let bc = Boundary::parse(bc, &[Boundary::Reflect, Boundary::Periodic]).map_err(to_py)?;
        let params = particles::Step { dt, sigma, lo, hi, seed, step, bc };
        let (x, drift) = (slice(&x), slice(&drift));
        let out = py
            .detach(|| particles::evolve_particles(&x, &drift, &params))
            .map_err(to_py)?;
        Ok(out.into_pyarray(py))
    }

    /// u (nt, nx) of the HJB equation backward from g for the running cost f (nt, nx).
    #[pyfunction]
    #[pyo3(signature = (f, g, *, dx, sigma, T, bc="reflect", variant="js", eps=1e-6, cfl=0.4, min_substeps=None))]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn hjb_backward<'py>(
        py: Python<'py>,
        f: PyReadonlyArray2<'py, f64>,
        g: PyReadonlyArray1<'py, f64>,
        dx: f64,
        sigma: f64,
        T: f64,
        bc: &str,
        variant: &str,
        eps: f64,
        cfl: f64,
        min_substeps: Option<Bound<'py, PyAny>>,
    ) -> PyResult<SweepOut<'py>> {
        let bc = Boundary::parse(bc, &SOLVER_BCS).map_err(to_py)?;
        let variant = weno::Variant::parse(variant).map_err(to_py)?;
        let params = hjb::HjbParams { dx, sigma, horizon: T, bc, variant, eps, cfl };
        let (f, nt, _) = slice2(&f);
        let g = slice(&g);
        let floor = floor_arg(min_substeps.as_ref())?;
        let sweep = py.detach(|| hjb::hjb_backward(&f, &g, nt, &params, floor.as_deref())).map_err(to_py)?;
        sweep_to_py(py, sweep, nt, g.len())
    }

    /// m (nt, nx) of the finite-volume Fokker–Planck sweep from m0 with the drift −∂x u.
    #[pyfunction]
    #[pyo3(signature = (u, m0, *, dx, sigma, T, bc="reflect", cfl=0.9, min_substeps=None))]
    #[allow(clippy::too_many_arguments, non_snake_case)]
    fn fv_forward<'py>(
        py: Python<'py>,
        u: PyReadonlyArray2<'py, f64>,
        m0: PyReadonlyArray1<'py, f64>,
        dx: f64,
        sigma: f64,
        T: f64,
        bc: &str,
        cfl: f64,
        min_substeps: Option<Bound<'py, PyAny>>,
    ) -> PyResult<SweepOut<'py>> {
        let bc = Boundary::parse(bc, &SOLVER_BCS).map_err(to_py)?;
        let params = fv::FvParams { dx, sigma, horizon: T, bc, cfl };
        let (u, nt, _) = slice2(&u);
        let m0 = slice(&m0);
        let floor = floor_arg(min_substeps.as_ref())?;
        let sweep = py.detach(|| fv::fv_forward(&u, &m0, nt, &params, floor.as_deref())).map_err(to_py)?;
        sweep_to_py(py, sweep, nt, m0.len())
    }

    /// m (nt, nx): particles from x0 moved by −∂x u, density by KDE at every output time.
    #[pyfunction]
    #[pyo3(signature = (x0, u, grid, *, sigma, T, lo, hi, seed, bc="reflect", method="binned", bandwidth=None, rule="scott", min_substeps=None))]
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
        bc: &str,
        method: &str,
        bandwidth: Option<f64>,
        rule: &str,
        min_substeps: Option<Bound<'py, PyAny>>,
    ) -> PyResult<SweepOut<'py>> {
        let bc = Boundary::parse(bc, &SOLVER_BCS).map_err(to_py)?;
        let method = kde::Method::parse(method).map_err(to_py)?;
        let bandwidth = match bandwidth {
            Some(h) => kde::Bandwidth::Fixed(h),
            None => kde::Bandwidth::parse(rule).map_err(to_py)?,
        };
        let params = particles::SweepParams { sigma, horizon: T, lo, hi, bc, seed, method, bandwidth };
        let (u, nt, _) = slice2(&u);
        let (x0, grid) = (slice(&x0), slice(&grid));
        let floor = floor_arg(min_substeps.as_ref())?;
        let sweep = py
            .detach(|| particles::forward_sweep(&x0, &u, &grid, nt, &params, floor.as_deref()))
            .map_err(to_py)?;
        sweep_to_py(py, sweep, nt, grid.len())
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

    /// Size of Rayon's global pool (RAYON_NUM_THREADS, else the number of cores).
    #[pyfunction]
    fn rayon_threads() -> usize {
        rayon::current_num_threads()
    }

    #[pymodule]
    fn _rust_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add_function(wrap_pyfunction!(smoothness_indicators, m)?)?;
        m.add_function(wrap_pyfunction!(weno5_derivatives, m)?)?;
        m.add_function(wrap_pyfunction!(kde_density, m)?)?;
        m.add_function(wrap_pyfunction!(evolve_particles, m)?)?;
        m.add_function(wrap_pyfunction!(hjb_backward, m)?)?;
        m.add_function(wrap_pyfunction!(fv_forward, m)?)?;
        m.add_function(wrap_pyfunction!(particles_forward, m)?)?;
        m.add_function(wrap_pyfunction!(philox_normals, m)?)?;
        m.add_function(wrap_pyfunction!(rayon_threads, m)?)?;
        Ok(())
    }
}
