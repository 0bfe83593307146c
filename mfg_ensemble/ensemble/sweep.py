"""A sweep: one base problem and solver, varied along named axes into an ensemble of members.

A sweep file (TOML) has three tables::

    [problem]            # a Problem (see mfg_ensemble.problem), the base of every member
    [solver]             # keyword arguments of solve(); seed is the root seed of the sweep
    [sweep]              # the axes, crossed (outer product) in the order written
    sigma = [0.1, 0.2, 0.3]                                   # axis "sigma"
    coupling = { field = "coupling.strength", values = [0.5, 1.0] }   # named axis, nested field
    seed = { count = 4 }                                      # 4 replicate seeds
    [sweep.zip.resolution]                                    # one axis, fields varied together
    nx = [101, 201]
    nt = [51, 101]
    [sweep.design.plane]                                      # one axis: points of a design
    method = "sobol"                                          # "lhs", "sobol" or "halton"
    n = 16
    seed = 1
    bounds = { sigma = [0.02, 1.0], "coupling.strength" = [0.01, 5.0] }
    log = ["coupling.strength"]                               # sampled uniformly in log
    [sweep.design.measured]                                   # or the rows of a CSV file
    file = "design.csv"                                       # header: the fields

A design axis, like a zip axis, sets several fields together; its points come from
``scipy.stats.qmc`` (scrambled with ``seed``: the same points on every machine) over the
box ``bounds`` (a field with integer bounds gets rounded integer values), or from a CSV file
(path relative to the sweep file; one column per field, numbers parsed as int or float).
The points become part of the sweep (its fingerprint covers them, not the file's name).
Sobol and Halton points are extensible: the first n of a larger design are the design of n,
so a store extends along such an axis (:meth:`Sweep.prefix`); Latin hypercubes are not.

Any Problem field (dotted paths reach into the families: "m0.std", "coupling.strength"; in
2-D also into the obstacles and exits, numbered from 0: "exits.0.hi", "obstacles.1") or
solver field can be an axis; every field at most once. ``seed = {count = N}`` gives the
replicate axis k = 0 … N − 1 whose member seed is drawn from
``numpy.random.SeedSequence(root_seed, spawn_key=(k,))``: it depends on k alone, not on the
other axes (common random numbers across parameter points) nor on the order members run in.
``seed = [s0, s1, ...]`` uses those seeds as they are. Nothing in a file is ever evaluated,
and values are typed strictly: a number is written as a number (``sigma = "0.1"``,
``nx = 31.0`` and ``sigma = true`` are errors, not conversions). An invalid file raises
:class:`ConfigError` naming the file, each field path (``problem.m0.std``, ``solver.damping``,
``sweep.zip.resolution``; ``(member i: ...)`` when a value fails for some members only) and
what is allowed there.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import math
import re
import tomllib
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mfg_ensemble import schema
from mfg_ensemble.errors import ConfigError
from mfg_ensemble.game.problem import Problem
from mfg_ensemble.game.problem2d import Problem2D, problem_model
from mfg_ensemble.game.solver import SolverOptions

SOLVER_FIELDS = tuple(SolverOptions.model_fields)
SOLVER_FIELDS_0_1 = (
    "fp",
    "n_particles",
    "seed",
    "hjb_variant",
    "kde_method",
    "bandwidth",
    "damping",
    "anderson",
    "tol",
    "max_iter",
)
"""The solver options of 0.1, whose defaults the fingerprint always includes."""
PROBLEM_FIELDS = tuple(Problem.model_fields)
GRID_FIELDS = ("lo", "hi", "T", "nx", "nt", "bc", "x_lo", "x_hi", "y_lo", "y_hi", "ny")
"""Problem fields that change the (t, x) (2-D: (t, y, x)) grid of a member."""
GEOMETRY_FIELDS = ("obstacles", "exits")
"""2-D fields that change a member's map of node kinds: an axis varies the whole list
("exits"), one entry ("obstacles.0") or one entry's field ("exits.0.hi"); a store whose axes vary
them keeps each member's map (``nodes``), as it keeps t, x and y when the grid varies."""
MAX_MEMBERS = 1_000_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
"""A sweep's or an axis's name (it names the store's folder and a dimension)."""


def _families(model: type[BaseModel] | None, field: Any) -> dict[str, type[BaseModel]]:
    """The named families a field of ``model`` can be, by kind ({} if it is not a family field)."""
    info = model.model_fields.get(field) if model is not None and isinstance(field, str) else None
    if info is None:
        return {}
    return {
        arg.model_fields["kind"].default: arg
        for arg in typing.get_args(info.annotation)
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "kind" in arg.model_fields
    }


def _file_kinds(families: Mapping[str, type[BaseModel]]) -> str:
    """The kinds a config file can name ("function" needs a Python callable)."""
    return ", ".join(repr(k) for k in families if k != "function")


def _walk(
    root: type[BaseModel] | None, loc: Sequence[Any]
) -> tuple[list[str], type[BaseModel] | None, type[BaseModel] | None]:
    """A pydantic error location without its union tags ("m0.gaussian.std" -> "m0.std"), the
    model holding its last part, and the model the location itself is (for model-level errors)."""
    parts: list[str] = []
    owner: type[BaseModel] | None = None
    model, i = root, 0
    while i < len(loc):
        part, owner = loc[i], model
        parts.append(str(part))
        families = _families(model, part)
        if i + 1 < len(loc) and loc[i + 1] in families:
            model, i = families[loc[i + 1]], i + 2
        else:
            model, i = None, i + 1
    return parts, owner, (model if loc else root)


def _pydantic_problems(prefix: str, exc: ValidationError, root: type[BaseModel] | None = None) -> list[tuple[str, str]]:
    """(field path, message saying what is allowed) for each error of ``exc``."""
    out = []
    for err in exc.errors():
        parts, owner, model = _walk(root, err["loc"])
        path = ".".join(p for p in [prefix, *parts] if p)
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            msg = "unknown field" + (f"; allowed: {', '.join(owner.model_fields)}" if owner is not None else "")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            kinds = _file_kinds(_families(owner, err["loc"][-1]))
            path += ".kind"
            if kind == "union_tag_invalid":
                msg = f"unknown kind {err['ctx']['tag']!r}; allowed: {kinds}"
            else:
                msg = f"missing: a table needs kind = one of {kinds}"
        elif kind == "missing":
            msg = "required, but missing"
        else:
            msg = msg.removeprefix("Value error, ")
            first = msg.split(" ", 1)[0].rstrip(",")
            if kind == "value_error" and model is not None and first in model.model_fields:
                path += f".{first}"  # a model-level check that names its field ("lo must be < hi")
            if "input" in err and not isinstance(err["input"], Mapping):
                msg += f" (got {err['input']!r})"
        out.append((path, msg))
    return out


def _plain(value: Any) -> Any:
    """NumPy scalars (from Python callers) as Python numbers, in nested tables and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _solver_options(table: Mapping[str, Any], source: str, where: str = "") -> SolverOptions:
    """The solver options of ``table``, validated strictly; ``ConfigError`` naming each field."""
    try:
        return SolverOptions.model_validate(table, strict=True)
    except ValidationError as exc:
        problems = _pydantic_problems("solver", exc, SolverOptions)
        raise ConfigError(source, [(f"{p} ({where})" if where else p, m) for p, m in problems]) from None


class _FileSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = None
    description: str | None = None
    problem: dict[str, Any] = Field(default_factory=dict)
    solver: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, Any] = Field(default_factory=dict)


class _AxisTable(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    field: str | None = None
    values: list[Any] | None = None
    count: int | None = Field(None, ge=1, le=MAX_MEMBERS)

    @field_validator("values")
    @classmethod
    def _not_empty(cls, v: list[Any] | None) -> list[Any] | None:
        if v is not None and not v:
            raise ValueError("an axis needs at least one value")
        return v


DESIGNS = ("lhs", "sobol", "halton")
"""The sampling designs of a design axis (``scipy.stats.qmc``)."""


class _DesignTable(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    method: typing.Literal["lhs", "sobol", "halton"] | None = None
    n: int | None = Field(None, ge=1, le=MAX_MEMBERS)
    seed: int = Field(0, ge=0)
    bounds: dict[str, list[int | float]] | None = None
    log: list[str] = Field(default_factory=list)
    file: str | None = None
    points: dict[str, list[Any]] | None = None  # the rows of ``file``, recorded when it is read


@dataclass(frozen=True)
class Axis:
    """One dimension of the sweep: its name, the fields it sets and their values.

    A plain axis sets one field; a zip axis sets several together (same length). ``coords``
    are the labels along the dimension (the values of a one-field axis, 0 … n − 1 for a
    zip or a counted seed axis).
    """

    name: str
    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # values[i] = the fields' values at position i
    coords: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Member:
    """One solve of the sweep: its flat index, its position along each axis, what it runs."""

    index: int
    position: tuple[int, ...]
    problem: Problem | Problem2D
    solver: SolverOptions

    def label(self, axes: Sequence[Axis]) -> str:
        return ", ".join(f"{a.name}={a.coords[i]!r}" for a, i in zip(axes, self.position))


def _number(text: str, where: str, field: str, sweep: Sweep) -> Any:
    """A CSV cell as an int or a float; a word stays a string (e.g. bc = reflect)."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            raise sweep._error("sweep.design", f"{where}: {field} = {text!r} is not a finite number")
        return value
    return text


def _seed_values(root: int, count: int) -> tuple[int, ...]:
    return tuple(
        int(np.random.SeedSequence(root, spawn_key=(k,)).generate_state(1, dtype=np.uint64)[0]) for k in range(count)
    )


def _set_field(
    problem: dict[str, Any], solver: dict[str, Any], field: str, value: Any, base: Problem | Problem2D
) -> None:
    """Set ``field`` (a solver option, a problem field or "family.field") to ``value``; a family
    the problem table does not give is taken from ``base`` (so its kind is kept)."""
    head, _, rest = field.partition(".")
    if head in SOLVER_FIELDS:
        solver[head] = value
        return
    if not rest:
        problem[head] = value
        return
    if head in GEOMETRY_FIELDS:
        entries = [e.model_dump() if isinstance(e, BaseModel) else e for e in problem.get(head, getattr(base, head))]
        index, _, name = rest.partition(".")
        entries[int(index)] = {**dict(entries[int(index)]), name: value} if name else value
        problem[head] = entries
        return
    family = problem.get(head)
    if isinstance(family, BaseModel):
        family = family.model_dump()
    elif isinstance(family, Mapping):
        family = dict(family)
    else:
        family = getattr(base, head).model_dump()
    family[rest] = value
    problem[head] = family


class Sweep:
    """A base problem, solver options and axes (see the module docstring).

    ``Sweep(problem=..., solver=..., axes=...)`` takes the problem as a ``Problem`` or a dict,
    the solver options as a dict, and the axes as the ``[sweep]`` table of a file (a dict).
    ``len(sweep)`` is the number of members; iterate ``sweep.members()``.
    """

    def __init__(
        self,
        problem: Problem | Problem2D | Mapping[str, Any] | None = None,
        solver: Mapping[str, Any] | None = None,
        axes: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        source: str = "<python>",
        text: str | None = None,
    ) -> None:
        self.source = source
        self.name = name
        if name is not None:
            self._check_name("name", name)
        self._problem_obj = problem if isinstance(problem, (Problem, Problem2D)) else None
        self.problem_table: dict[str, Any] = (
            dict(problem) if self._problem_obj is not None else copy.deepcopy(dict(problem or {}))
        )
        self._model = problem_model(problem if self._problem_obj is not None else self.problem_table)
        self.problem_table = _plain(self.problem_table)
        self.solver_table: dict[str, Any] = _plain(dict(solver or {}))
        self.axes_table: dict[str, Any] = _plain(copy.deepcopy(dict(axes or {})))
        self._validate_base()
        self.root_seed = int(self.solver_table.get("seed", 0))
        self.axes: tuple[Axis, ...] = self._parse_axes()
        self._validate_members()
        self.text = text if text is not None else self.canonical_json()

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> Sweep:
        """The sweep of a TOML file; ``ConfigError`` (naming the file and field) if it is invalid."""
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(source, [("", f"not a UTF-8 text file: {exc}")]) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from None
        except RecursionError:
            raise ConfigError(source, [("", "not a sweep file: its tables or arrays are nested too deeply")]) from None
        if not data:
            raise ConfigError(
                source, [("", "the file is empty: a sweep file has [problem], [solver] and [sweep] tables")]
            )
        try:
            doc = _FileSchema.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, _pydantic_problems("", exc, _FileSchema)) from None
        try:
            sweep = cls(doc.problem, doc.solver, doc.sweep, name=doc.name, source=source, text=text)
        except RecursionError:
            raise ConfigError(source, [("", "not a sweep file: its values are nested too deeply")]) from None
        sweep.name = doc.name or path.stem  # a file's own name is no path; a given name is checked
        return sweep

    def _error(self, field: str, message: str) -> ConfigError:
        return ConfigError(self.source, [(field, message)])

    def _parse_axes(self) -> tuple[Axis, ...]:
        axes: list[Axis] = []
        seen: dict[str, str] = {}

        def claim(field: str, axis: str) -> None:
            self._check_path(field, f"sweep.{axis}")
            for other, owner in seen.items():
                if other == field or other.startswith(field + ".") or field.startswith(other + "."):
                    raise self._error(
                        f"sweep.{axis}",
                        f"field {field!r} is already varied by axis {owner!r}; vary each field in one axis only",
                    )
            seen[field] = axis

        for key, spec in self.axes_table.items():
            if key == "zip":
                if not isinstance(spec, Mapping) or not spec:
                    raise self._error("sweep.zip", "must be a table of groups, e.g. [sweep.zip.resolution] nx = [...]")
                for group, fields in spec.items():
                    axes.append(self._zip_axis(group, fields, claim))
                continue
            if key == "design":
                if not isinstance(spec, Mapping) or not spec:
                    raise self._error(
                        "sweep.design", 'must be a table of groups, e.g. [sweep.design.plane] method = "sobol"'
                    )
                for group, design in spec.items():
                    axes.append(self._design_axis(group, design, claim))
                continue
            axes.append(self._plain_axis(key, spec, claim))
        names = [a.name for a in axes]
        for name in names:
            self._check_name(f"sweep.{name}", name)
            if names.count(name) > 1:
                raise self._error(f"sweep.{name}", "axis names must be unique")
        total = math.prod(len(a) for a in axes)
        if total > MAX_MEMBERS:
            raise self._error("sweep", f"{total} members is more than the {MAX_MEMBERS} allowed")
        return tuple(axes)

    def _check_name(self, where: str, name: str) -> None:
        """``ConfigError`` unless ``name`` can name a store file and a store dimension: letters,
        digits and ``_ . + -`` (no ``/``, no ``..``), at most 64 characters, and not a name the
        store itself uses (``u``, ``m``, ``status``, ``members``, ``t_index``, ...)."""
        if not NAME.fullmatch(name) or ".." in name:
            raise self._error(
                where,
                f"{name!r} is not a valid name: use 1 to 64 letters, digits and _ . + - "
                "(starting with a letter or digit; no '/', no '..')",
            )
        if name in schema.RESERVED:
            reserved = ", ".join(sorted(schema.RESERVED))
            raise self._error(where, f"{name!r} is a name of the store itself; these are taken: {reserved}")

    def _check_path(self, field: str, where: str) -> None:
        """``ConfigError`` unless ``field`` is a solver option, a problem field or a field of one
        of the base problem's families ("coupling.strength")."""
        head, _, rest = field.partition(".")
        fields = tuple(self._model.model_fields)
        if head in GEOMETRY_FIELDS and self._model is Problem2D:
            return self._check_geometry_path(field, where)
        if head not in SOLVER_FIELDS and head not in fields:
            allowed = ", ".join(fields + SOLVER_FIELDS)
            raise self._error(
                where,
                f"unknown field {field!r}; axes can vary {allowed}, or a family's field as in 'coupling.strength'",
            )
        if not rest:
            return
        family = getattr(self._base, head, None)
        if not isinstance(family, BaseModel):
            families = ", ".join(n for n in fields if _families(self._model, n))
            raise self._error(
                where, f"{field!r}: {head} has no fields; dotted paths reach into the families {families}"
            )
        if rest not in type(family).model_fields:
            fields = ", ".join(f"{head}.{f}" for f in type(family).model_fields)
            raise self._error(
                where,
                f"unknown field {field!r}: the base problem's {head} is {family.kind!r}, whose fields are {fields}",
            )

    def _check_geometry_path(self, field: str, where: str) -> None:
        """``ConfigError`` unless ``field`` is "obstacles" or "exits", one of the base problem's
        entries ("exits.1") or a field of one ("obstacles.0.radius")."""
        head, _, rest = field.partition(".")
        if not rest:
            return
        entries = getattr(self._base, head)
        index, _, name = rest.partition(".")
        if not entries:
            raise self._error(
                where, f"{field!r}: the base problem has no {head}; vary the whole list, field = {head!r}"
            )
        if not (index.isdigit() and int(index) < len(entries)):
            raise self._error(
                where,
                f"unknown field {field!r}: the base problem's {head} are numbered 0 … {len(entries) - 1}, "
                f"as in '{head}.0' (one entry) or '{head}.0.{next(iter(type(entries[0]).model_fields))}'",
            )
        entry = entries[int(index)]
        if name and name not in type(entry).model_fields:
            allowed = ", ".join(f"{head}.{index}.{f}" for f in type(entry).model_fields)
            raise self._error(
                where, f"unknown field {field!r}: {head}.{index} is {getattr(entry, 'kind', head)!r}, with {allowed}"
            )

    def _plain_axis(self, key: str, spec: Any, claim: Any) -> Axis:
        where = f"sweep.{key}"
        if isinstance(spec, list):
            table = _AxisTable(values=spec) if spec else None
            if table is None:
                raise self._error(where, "an axis needs at least one value")
        elif isinstance(spec, Mapping):
            try:
                table = _AxisTable.model_validate(spec)
            except ValidationError as exc:
                raise ConfigError(self.source, _pydantic_problems(where, exc, _AxisTable)) from None
        else:
            raise self._error(where, f"must be a list of values or a table {{values = [...]}}, got {spec!r}")
        field = table.field or key
        claim(field, key)
        name = key.replace(".", "_")
        if table.count is not None:
            if field != "seed" or table.values is not None:
                raise self._error(
                    where,
                    f"count = N is only for the seed axis (seed = {{count = N}}), not for {field!r}, "
                    "and not together with values",
                )
            seeds = _seed_values(self.root_seed, table.count)
            return Axis(name, (field,), tuple((s,) for s in seeds), tuple(range(table.count)))
        if table.values is None:
            raise self._error(where, "needs values = [...] (or count = N for the seed axis)")
        values = table.values
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise self._error(where, f"has repeated values {values!r}")
        coords = (
            tuple(values)
            if all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values)
            else tuple(range(len(values)))
        )
        return Axis(name, (field,), tuple((v,) for v in values), coords)

    def _zip_axis(self, group: str, fields: Any, claim: Any) -> Axis:
        where = f"sweep.zip.{group}"
        if not isinstance(fields, Mapping) or not fields:
            raise self._error(where, "must be a table of field = [values]")
        lengths = {}
        for field, values in fields.items():
            if not isinstance(values, list) or not values:
                raise self._error(f"{where}.{field}", "must be a non-empty list of values")
            lengths[field] = len(values)
            claim(field, group)
        if len(set(lengths.values())) > 1:
            raise self._error(where, f"the lists of a zip group must all have the same length, got lengths {lengths}")
        n = next(iter(lengths.values()))
        values = tuple(tuple(fields[f][i] for f in fields) for i in range(n))
        return Axis(group, tuple(fields), values, tuple(range(n)))

    def _design_axis(self, group: str, spec: Any, claim: Any) -> Axis:
        """A design axis: the points of a QMC design over ``bounds``, or the rows of a CSV file
        (recorded in the axes table as ``points``, so the fingerprint covers them)."""
        where = f"sweep.design.{group}"
        if not isinstance(spec, Mapping):
            raise self._error(where, 'must be a table: method = "lhs" | "sobol" | "halton", n, seed, bounds; or file')
        try:
            table = _DesignTable.model_validate(spec)
        except ValidationError as exc:
            raise ConfigError(self.source, _pydantic_problems(where, exc, _DesignTable)) from None
        if table.points is not None:
            columns = table.points
        elif table.file is not None:
            if table.method is not None or table.bounds is not None:
                raise self._error(where, "give either file = ... or method, n and bounds, not both")
            columns = self._read_design(where, table.file)
            self.axes_table["design"][group]["points"] = columns
        else:
            columns = self._sample_design(where, table)
        for field in columns:
            claim(field, group)
        n = len(next(iter(columns.values())))
        values = tuple(tuple(columns[f][i] for f in columns) for i in range(n))
        return Axis(group, tuple(columns), values, tuple(range(n)))

    def _sample_design(self, where: str, table: _DesignTable) -> dict[str, list[Any]]:
        """n points of the design ``table.method`` in the box ``table.bounds``."""
        from scipy.stats import qmc

        if table.method is None or table.n is None or not table.bounds:
            raise self._error(where, f"needs method (one of {', '.join(DESIGNS)}), n and bounds = {{field = [lo, hi]}}")
        for field, pair in table.bounds.items():
            if len(pair) != 2 or not (math.isfinite(pair[0]) and math.isfinite(pair[1]) and pair[0] < pair[1]):
                raise self._error(f"{where}.bounds.{field}", f"must be [lo, hi] with finite lo < hi, got {pair!r}")
            if field in table.log and pair[0] <= 0:
                raise self._error(f"{where}.bounds.{field}", f"a log-sampled field needs lo > 0, got {pair!r}")
        unknown = [f for f in table.log if f not in table.bounds]
        if unknown:
            raise self._error(f"{where}.log", f"{unknown[0]!r} has no bounds; log lists fields of bounds")
        d = len(table.bounds)
        engines = {"lhs": qmc.LatinHypercube, "sobol": qmc.Sobol, "halton": qmc.Halton}
        engine = engines[table.method](d=d, rng=np.random.default_rng(table.seed))
        with warnings.catch_warnings():  # Sobol's "balance properties" warning for n ≠ 2^k
            warnings.simplefilter("ignore", UserWarning)
            unit = engine.random(table.n)
        columns: dict[str, list[Any]] = {}
        for k, (field, (lo, hi)) in enumerate(table.bounds.items()):
            if field in table.log:
                column = np.exp(np.log(lo) + unit[:, k] * (np.log(hi) - np.log(lo)))
            else:
                column = lo + unit[:, k] * (hi - lo)
            if isinstance(lo, int) and isinstance(hi, int):
                columns[field] = [int(v) for v in np.rint(column)]
            else:
                columns[field] = [float(v) for v in column]
        return columns

    def _read_design(self, where: str, name: str) -> dict[str, list[Any]]:
        """The columns of a CSV design file (header: the fields), numbers as int or float."""
        base = Path(self.source).parent if self.source != "<python>" else Path.cwd()
        path = base / name
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(
                f"{where}.file", f"cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        if len(rows) < 2:
            raise self._error(f"{where}.file", f"{str(path)!r} needs a header of fields and at least one row")
        header = [h.strip() for h in rows[0]]
        if len(set(header)) != len(header) or not all(header):
            raise self._error(f"{where}.file", f"{str(path)!r}: the header must name distinct fields, got {header}")
        columns: dict[str, list[Any]] = {h: [] for h in header}
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise self._error(
                    f"{where}.file", f"{str(path)!r} line {line}: {len(row)} values for {len(header)} fields"
                )
            for h, cell in zip(header, row):
                columns[h].append(_number(cell.strip(), f"{path} line {line}", h, self))
        return columns

    def _validate_base(self) -> None:
        """The base problem and solver options must be valid on their own."""
        try:
            self._base = self._problem_obj or self._model.model_validate(self.problem_table, strict=True)
        except ValidationError as exc:
            raise ConfigError(self.source, _pydantic_problems("problem", exc, self._model)) from None
        self._solver = _solver_options(self.solver_table, self.source)

    def _validate_members(self) -> None:
        """Build every member once, so that a bad value fails before anything runs."""
        problems: list[tuple[str, str]] = []
        for _ in self._iter_members(collect=problems):
            pass
        if problems:
            raise ConfigError(
                self.source,
                problems[:20] + ([("", f"... and {len(problems) - 20} more")] if len(problems) > 20 else []),
            )

    # -- members ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    def __len__(self) -> int:
        return math.prod(self.shape)

    def members(self) -> Iterator[Member]:
        """Every member, in C order over the axes (the last axis fastest)."""
        return self._iter_members()

    def member(self, index: int) -> Member:
        position = tuple(int(i) for i in np.unravel_index(index, self.shape)) if self.axes else ()
        return self._build(index, position)

    def _iter_members(self, collect: list[tuple[str, str]] | None = None) -> Iterator[Member]:
        for index, position in enumerate(itertools.product(*(range(len(a)) for a in self.axes))):
            try:
                yield self._build(index, position)
            except ConfigError as exc:
                if collect is None:
                    raise
                collect.extend(p for p in exc.problems if p not in collect)

    def _build(self, index: int, position: tuple[int, ...]) -> Member:
        problem = copy.deepcopy(self.problem_table)
        solver = dict(self.solver_table)
        varied_problem = varied_solver = False
        for axis, i in zip(self.axes, position):
            for field, value in zip(axis.fields, axis.values[i]):
                _set_field(problem, solver, field, value, self._base)
                is_solver = field.split(".")[0] in SOLVER_FIELDS
                varied_solver |= is_solver
                varied_problem |= not is_solver
        where = f"member {index}: " + ", ".join(f"{a.name}={a.coords[i]!r}" for a, i in zip(self.axes, position))
        try:
            built = self._model.model_validate(problem, strict=True) if varied_problem else self._base
        except ValidationError as exc:
            raise ConfigError(
                self.source, [(f"{p} ({where})", m) for p, m in _pydantic_problems("problem", exc, self._model)]
            ) from None
        opts = _solver_options(solver, self.source, where) if varied_solver else self._solver
        try:
            opts.check_memory(built)
        except ValueError as exc:
            raise ConfigError(self.source, [(f"solver.n_particles ({where})", str(exc))]) from None
        return Member(index, position, built, opts)

    def prefix(self, shape: Sequence[int]) -> Sweep:
        """This sweep with each axis cut to its first ``shape[i]`` values (a counted seed axis
        to its first ``shape[i]`` seeds): the sweep a store of that shape holds if this sweep
        extends it. ``ValueError`` if ``shape`` does not fit this sweep's axes."""
        if len(shape) != len(self.axes) or any(not 1 <= n <= len(a) for n, a in zip(shape, self.axes)):
            raise ValueError(f"shape {tuple(shape)} is not a prefix of this sweep's shape {self.shape}")
        sizes = {a.name: int(n) for a, n in zip(self.axes, shape)}
        table = copy.deepcopy(self.axes_table)
        for key, spec in table.items():
            if key == "zip":
                for group, fields in spec.items():
                    for field in fields:
                        fields[field] = fields[field][: sizes[group]]
                continue
            if key == "design":  # Sobol and Halton are extensible: their first n points
                for group, design in spec.items():
                    if design.get("method") in ("sobol", "halton"):
                        design["n"] = sizes[group]
                        continue
                    axis = next(a for a in self.axes if a.name == group)
                    points = {f: [v[k] for v in axis.values[: sizes[group]]] for k, f in enumerate(axis.fields)}
                    spec[group] = {"points": points}
                continue
            n = sizes[key.replace(".", "_")]
            if isinstance(spec, list):
                table[key] = spec[:n]
            elif spec.get("count") is not None:
                spec["count"] = n
            else:
                spec["values"] = spec["values"][:n]
        problem = self._problem_obj if self._problem_obj is not None else self.problem_table
        return Sweep(problem, self.solver_table, table, name=self.name, source=self.source)

    # -- description ------------------------------------------------------------------------
    @property
    def base_problem(self) -> Problem | Problem2D:
        return self._base

    @property
    def base_solver(self) -> SolverOptions:
        return self._solver

    def varies_grid(self) -> bool:
        """Whether the members' grids differ: their nodes, times or (2-D) maps of node kinds."""
        return any(f.split(".")[0] in GRID_FIELDS + GEOMETRY_FIELDS for a in self.axes for f in a.fields)

    def canonical_json(self, layout: bool = True) -> str:
        """The sweep as canonical JSON: what the fingerprint hashes. ``layout``: with the axes in
        their order (which fixes every member's flat index); 0.1 hashed the sweep without it."""
        try:  # the validated base, defaults filled in: `sigma = 0.2` equals leaving the default
            problem: Any = json.loads(self._base.model_dump_json())
        except ValueError:  # a Python callable in a family
            problem = self.problem_table
        # the solver table as written over the defaults of the 0.1 options (not the coerced
        # model: `damping = 1` hashed as 1, as 0.1 did); options added since count only when
        # set, so adding an option leaves the fingerprints of existing sweeps as they were
        defaults = {k: v for k, v in SolverOptions().model_dump().items() if k in SOLVER_FIELDS_0_1}
        solver = {**defaults, **self.solver_table}
        doc: dict[str, Any] = {"problem": problem, "solver": solver, "sweep": self.axes_table}
        if layout:
            doc["layout"] = [[a.name, list(a.fields)] for a in self.axes]
        return json.dumps(doc, sort_keys=True, default=repr)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of :meth:`canonical_json`: equal for equal sweeps, whatever the file's
        formatting; two sweeps whose axes come in another order differ."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def fingerprint_0_1(self) -> str:
        """The fingerprint mfg_ensemble 0.1 wrote (blind to the order of the axes): a 0.1 store
        is this sweep's if it matches and the store's axes are this sweep's, in order."""
        return hashlib.sha256(self.canonical_json(layout=False).encode()).hexdigest()

    def describe(self, limit: int | None = 20) -> str:
        """A dry-run listing: the axes and the first ``limit`` members."""
        lines = [f"sweep {self.name or self.source}: {len(self)} member(s)"]
        for a in self.axes:
            shown = ", ".join(repr(c) for c in a.coords[:8]) + (", ..." if len(a) > 8 else "")
            lines.append(f"  axis {a.name} ({len(a)}): {'+'.join(a.fields)} = {shown}")
        for member in itertools.islice(self.members(), limit):
            lines.append(f"  [{member.index}] {member.label(self.axes) or '(the base problem)'}")
        if limit is not None and len(self) > limit:
            lines.append(f"  ... and {len(self) - limit} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        dims = ", ".join(f"{a.name}: {len(a)}" for a in self.axes)
        return f"<Sweep {self.name or self.source} ({dims}) {len(self)} members>"
