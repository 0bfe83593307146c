//! Conversion between Python arguments and the kernels' Rust types (feature "python"), done
//! once, at the binding boundary, in the manner of pydantic-core and polars:
//!
//! * the choice arguments are `FromPyObject` types: `Bc<Allowed>` (a boundary condition out of
//!   the set one binding allows, the message listing that set), `weno::Variant`, `kde::Method`, `fv::FvScheme`;
//!   a bad string is a `ValueError` raised while the arguments are extracted;
//! * `MinSubsteps` is the checked `min_substeps` floor argument;
//! * `impl From<KernelError> for PyErr` (a `ValueError`) lets a binding use `?` on a kernel;
//! * `march_to_py` turns a `Marching` into `(values (nt, nx), substeps (nt − 1,) int64)`, or
//!   raises `mfg_ensemble.errors.Diverged` (a `FloatingPointError`) if the march blew up;
//! * `slice`, `slice2` borrow NumPy data as slices, copying only non-contiguous arrays.

use std::borrow::Cow;
use std::marker::PhantomData;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyFloatingPointError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::boundary::{Boundary, REFLECT_OR_PERIODIC};
use crate::error::KernelError;
use crate::substeps::{floors_from_i64, Marching};
use crate::{fv, fv2d, hjb, kde, weno};

pyo3::import_exception!(mfg_ensemble.errors, Diverged);

impl From<KernelError> for PyErr {
    fn from(e: KernelError) -> PyErr {
        PyValueError::new_err(e.0)
    }
}

/// The text of a choice argument (a `TypeError` for anything but a `str`, as `&str` gives).
fn text(obj: Borrowed<'_, '_, PyAny>) -> PyResult<String> {
    Ok(obj.cast::<PyString>()?.to_cow()?.into_owned())
}

/// The boundary conditions a binding allows, in the order its error message lists them.
pub trait Allowed {
    const BCS: &'static [Boundary];
}

/// `weno5_derivatives`: 'periodic', 'reflect'.
pub enum WenoBcs {}
impl Allowed for WenoBcs {
    const BCS: &'static [Boundary] = &weno::BCS;
}

/// `kde`: 'reflect', 'none', 'periodic'.
pub enum KdeBcs {}
impl Allowed for KdeBcs {
    const BCS: &'static [Boundary] = &kde::BCS;
}

/// The particles and the time marches: 'reflect', 'periodic'.
pub enum MarchBcs {}
impl Allowed for MarchBcs {
    const BCS: &'static [Boundary] = &REFLECT_OR_PERIODIC;
}

/// A `bc` argument: one of the boundary conditions `A` allows, else a `ValueError`
/// "bc must be one of <A's choices>, got '<text>'".
pub struct Bc<A>(pub Boundary, PhantomData<A>);

impl<A: Allowed> Bc<A> {
    /// A default value (one of A's choices).
    pub fn new(bc: Boundary) -> Bc<A> {
        debug_assert!(A::BCS.contains(&bc));
        Bc(bc, PhantomData)
    }
}

impl<'a, 'py, A: Allowed> FromPyObject<'a, 'py> for Bc<A> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Bc(Boundary::parse(&text(obj)?, A::BCS)?, PhantomData))
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for weno::Variant {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(weno::Variant::parse(&text(obj)?)?)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for hjb::Scheme {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(hjb::Scheme::parse(&text(obj)?)?)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for fv::FvScheme {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(fv::FvScheme::parse(&text(obj)?)?)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for kde::Method {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(kde::Method::parse(&text(obj)?)?)
    }
}

/// The `min_substeps` argument of the marches (`None` is `Option::None`): a sequence of
/// integers (a list or an integer array), each in [1, MAX_SUBSTEPS]; anything else is a
/// `ValueError`. The length is checked by the kernel.
pub struct MinSubsteps(pub Vec<usize>);

impl<'a, 'py> FromPyObject<'a, 'py> for MinSubsteps {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let ints: Vec<i64> = obj.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "min_substeps must be None or a sequence of integers, got {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
            ))
        })?;
        Ok(MinSubsteps(floors_from_i64(&ints)?))
    }
}

/// The array's data as a slice, copied only when it is not contiguous.
pub fn slice<'a>(a: &'a PyReadonlyArray1<'_, f64>) -> Cow<'a, [f64]> {
    match a.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(a.as_array().to_vec()),
    }
}

/// A 2-D array's data (row-major) and its shape, copied only when not C-contiguous.
pub fn slice2<'a>(a: &'a PyReadonlyArray2<'_, f64>) -> (Cow<'a, [f64]>, usize, usize) {
    let (rows, cols) = a.as_array().dim();
    let data = match a.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(a.as_array().iter().copied().collect()),
    };
    (data, rows, cols)
}

/// `rows` × `cols` values, row-major, as a NumPy array.
pub fn array2(py: Python<'_>, values: Vec<f64>, rows: usize, cols: usize) -> PyResult<Bound<'_, PyArray2<f64>>> {
    let a = Array2::from_shape_vec((rows, cols), values).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// `Diverged(reason)`. `Diverged::new_err` resolves the class lazily and panics (an abort at
/// the FFI boundary) if it cannot be imported, so the import is tried first; should it fail
/// (a broken install), the error is its base class FloatingPointError, caused by the
/// ImportError.
fn diverged(py: Python<'_>, reason: String) -> PyErr {
    match py.import("mfg_ensemble.errors").and_then(|m| m.getattr("Diverged")) {
        Ok(_) => Diverged::new_err(reason),
        Err(cause) => {
            let err = PyFloatingPointError::new_err(reason);
            err.set_cause(py, Some(cause));
            err
        }
    }
}

/// What the marching bindings return: values (nt, nx) and sub-steps per interval (int64).
pub type MarchOut<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<i64>>);

/// (values (nt, nx), sub-steps per output interval (nt − 1,) as int64) of a march, or
/// `mfg_ensemble.errors.Diverged` with the kernel's reason if it blew up.
pub fn march_to_py(py: Python<'_>, march: Marching, nt: usize, nx: usize) -> PyResult<MarchOut<'_>> {
    if let Some(reason) = march.diverged {
        return Err(diverged(py, reason));
    }
    let counts: Vec<i64> = march.substeps.iter().map(|&k| k as i64).collect();
    Ok((array2(py, march.values, nt, nx)?, counts.into_pyarray(py)))
}

// -- 2-D finite-volume Fokker–Planck (fv2d) ------------------------------------------------------

/// A 3-D array's data (row-major) and its shape, copied only when not C-contiguous.
pub fn slice3<'a>(a: &'a numpy::PyReadonlyArray3<'_, f64>) -> (Cow<'a, [f64]>, [usize; 3]) {
    let (d0, d1, d2) = a.as_array().dim();
    let data = match a.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(a.as_array().iter().copied().collect()),
    };
    (data, [d0, d1, d2])
}

/// A 2-D uint8 array's data (row-major), copied only when not C-contiguous.
pub fn slice2_u8<'a>(a: &'a PyReadonlyArray2<'_, u8>) -> Cow<'a, [u8]> {
    match a.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(a.as_array().iter().copied().collect()),
    }
}

/// What `fv_forward_2d` returns: m (nt, ny, nx), sub-steps (nt − 1,) int64, exited (nt,).
pub type March2dOut<'py> = (Bound<'py, numpy::PyArray3<f64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>);

/// (m (nt, ny, nx), sub-steps, exited) of a 2-D march, or `Diverged` if it blew up.
pub fn march2d_to_py(py: Python<'_>, out: fv2d::Fv2dOut, shape: [usize; 3]) -> PyResult<March2dOut<'_>> {
    if let Some(reason) = out.march.diverged {
        return Err(diverged(py, reason));
    }
    let counts: Vec<i64> = out.march.substeps.iter().map(|&k| k as i64).collect();
    let values = numpy::ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), out.march.values)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((values.into_pyarray(py), counts.into_pyarray(py), out.exited.into_pyarray(py)))
}
