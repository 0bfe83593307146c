//! mfg_ensemble's Rust kernels. The numerical modules are pure functions over slices;
//! this file holds only the PyO3 bindings (feature "python", on in maturin builds):
//! convert, validate, release the GIL, call, and turn `KernelError` into `ValueError`.

pub mod boundary;
pub mod error;
pub mod kde;
pub mod particles;
pub mod rng;
pub mod weno;

#[cfg(feature = "python")]
mod bindings {
    use std::borrow::Cow;

    use numpy::ndarray::Array2;
    use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;

    use crate::boundary::Boundary;
    use crate::error::KernelError;
    use crate::{kde, particles, rng, weno};

    fn to_py(e: KernelError) -> PyErr {
        PyValueError::new_err(e.0)
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
    ) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>)> {
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
        let bc = Boundary::parse(bc, &[Boundary::Reflect, Boundary::Open]).map_err(to_py)?;
        let kernel = match method {
            "exact" => kde::kde_exact,
            "binned" => kde::kde_binned,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "method must be one of 'exact', 'binned', got '{method}'"
                )))
            }
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
        m.add_function(wrap_pyfunction!(philox_normals, m)?)?;
        m.add_function(wrap_pyfunction!(rayon_threads, m)?)?;
        Ok(())
    }
}
