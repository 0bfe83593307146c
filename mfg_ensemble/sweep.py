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

Any Problem field (dotted paths reach into the families: "m0.std", "coupling.strength") or
solver field can be an axis; every field at most once. ``seed = {count = N}`` gives the
replicate axis k = 0 … N − 1 whose member seed is drawn from
``numpy.random.SeedSequence(root_seed, spawn_key=(k,))``: it depends on k alone, not on the
other axes (common random numbers across parameter points) nor on the order members run in.
``seed = [s0, s1, ...]`` uses those seeds as they are. Nothing in a file is ever evaluated.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mfg_ensemble.problem import Problem
from mfg_ensemble.solver import SolverOptions

SOLVER_FIELDS = tuple(SolverOptions.__dataclass_fields__)
PROBLEM_FIELDS = tuple(Problem.model_fields)
GRID_FIELDS = ("lo", "hi", "T", "nx", "nt", "bc")
"""Problem fields that change the (t, x) grid of a member."""
MAX_MEMBERS = 1_000_000


class ConfigError(ValueError):
    """A sweep that cannot run: names the file, the field and what is allowed."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{field}: {message}" if field else message for field, message in self.problems]
        super().__init__(f"invalid sweep {source}:\n  " + "\n  ".join(lines))


def _loc(prefix: str, loc: Sequence[Any]) -> str:
    parts = [prefix] + [str(p) for p in loc if not (isinstance(p, str) and p in _FAMILY_TAGS)]
    return ".".join(p for p in parts if p)


_FAMILY_TAGS = {
    "zero", "constant", "quadratic", "wells", "cosine", "values", "function", "gaussian", "uniform",
    "mixture", "linear", "log", "power", "mean_quadratic",
}  # fmt: skip


def _pydantic_problems(prefix: str, exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            msg += f" (got {err['input']!r})"
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append((_loc(prefix, err["loc"]), msg))
    return out


class _FileSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    description: str | None = None
    problem: dict[str, Any] = Field(default_factory=dict)
    solver: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, Any] = Field(default_factory=dict)


class _AxisTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str | None = None
    values: list[Any] | None = None
    count: int | None = Field(None, ge=1, le=MAX_MEMBERS)

    @field_validator("values")
    @classmethod
    def _not_empty(cls, v: list[Any] | None) -> list[Any] | None:
        if v is not None and not v:
            raise ValueError("an axis needs at least one value")
        return v


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
    problem: Problem
    solver: SolverOptions

    def label(self, axes: Sequence[Axis]) -> str:
        return ", ".join(f"{a.name}={a.coords[i]!r}" for a, i in zip(axes, self.position))


def _seed_values(root: int, count: int) -> tuple[int, ...]:
    return tuple(
        int(np.random.SeedSequence(root, spawn_key=(k,)).generate_state(1, dtype=np.uint64)[0]) for k in range(count)
    )


def _set_field(problem: dict[str, Any], solver: dict[str, Any], field: str, value: Any) -> None:
    head, _, rest = field.partition(".")
    if head in SOLVER_FIELDS and not rest:
        solver[head] = value
        return
    node = problem
    parts = field.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {} if child is None else dict(child) if isinstance(child, Mapping) else child
        if not isinstance(child, dict):
            raise KeyError(f"{part} is not a table")
        node = child
    node[parts[-1]] = value


class Sweep:
    """A base problem, solver options and axes (see the module docstring).

    ``Sweep(problem=..., solver=..., axes=...)`` takes the problem as a ``Problem`` or a dict,
    the solver options as a dict, and the axes as the ``[sweep]`` table of a file (a dict).
    ``len(sweep)`` is the number of members; iterate ``sweep.members()``.
    """

    def __init__(
        self,
        problem: Problem | Mapping[str, Any] | None = None,
        solver: Mapping[str, Any] | None = None,
        axes: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        source: str = "<python>",
        text: str | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self._problem_obj = problem if isinstance(problem, Problem) else None
        self.problem_table: dict[str, Any] = (
            dict(problem) if isinstance(problem, Problem) else copy.deepcopy(dict(problem or {}))
        )
        self.solver_table: dict[str, Any] = dict(solver or {})
        self.axes_table: dict[str, Any] = copy.deepcopy(dict(axes or {}))
        self.axes: tuple[Axis, ...] = self._parse_axes()
        self.root_seed = int(self.solver_table.get("seed", 0))
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
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from None
        try:
            schema = _FileSchema.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, _pydantic_problems("", exc)) from None
        return cls(schema.problem, schema.solver, schema.sweep, name=schema.name or path.stem, source=source, text=text)

    def _error(self, field: str, message: str) -> ConfigError:
        return ConfigError(self.source, [(field, message)])

    def _parse_axes(self) -> tuple[Axis, ...]:
        axes: list[Axis] = []
        seen: dict[str, str] = {}

        def claim(field: str, axis: str) -> None:
            head = field.split(".")[0]
            if head not in SOLVER_FIELDS and head not in PROBLEM_FIELDS:
                allowed = ", ".join(PROBLEM_FIELDS + SOLVER_FIELDS)
                raise self._error(f"sweep.{axis}", f"unknown field {field!r}; axes can vary {allowed} (or a dotted path)")
            for other, owner in seen.items():
                if other == field or other.startswith(field + ".") or field.startswith(other + "."):
                    raise self._error(f"sweep.{axis}", f"field {field!r} is already varied by axis {owner!r}")
            seen[field] = axis

        for key, spec in self.axes_table.items():
            if key == "zip":
                if not isinstance(spec, Mapping) or not spec:
                    raise self._error("sweep.zip", "must be a table of groups, e.g. [sweep.zip.resolution] nx = [...]")
                for group, fields in spec.items():
                    axes.append(self._zip_axis(group, fields, claim))
                continue
            axes.append(self._plain_axis(key, spec, claim))
        names = [a.name for a in axes]
        for name in names:
            if names.count(name) > 1 or name in ("t", "x", "iteration"):
                raise self._error(f"sweep.{name}", "axis names must be unique and not t, x or iteration")
        total = math.prod(len(a) for a in axes)
        if total > MAX_MEMBERS:
            raise self._error("sweep", f"{total} members is more than the {MAX_MEMBERS} allowed")
        return tuple(axes)

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
                raise ConfigError(self.source, _pydantic_problems(where, exc)) from None
        else:
            raise self._error(where, f"must be a list of values or a table {{values = [...]}}, got {spec!r}")
        field = table.field or key
        claim(field, key)
        name = key.replace(".", "_")
        if table.count is not None:
            if field != "seed" or table.values is not None:
                raise self._error(where, "count = N is only for the seed axis, and not together with values")
            seeds = _seed_values(int(self.solver_table.get("seed", 0)), table.count)
            return Axis(name, (field,), tuple((s,) for s in seeds), tuple(range(table.count)))
        if table.values is None:
            raise self._error(where, "needs values = [...] (or count = N for seed)")
        values = table.values
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise self._error(where, f"has repeated values {values!r}")
        coords = tuple(values) if all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values) else tuple(range(len(values)))
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
            raise self._error(where, f"the lists of a zip group must have equal lengths, got {lengths}")
        n = next(iter(lengths.values()))
        values = tuple(tuple(fields[f][i] for f in fields) for i in range(n))
        return Axis(group, tuple(fields), values, tuple(range(n)))

    def _validate_members(self) -> None:
        """Build every member once, so that a bad value fails before anything runs."""
        try:
            base = self._problem_obj or Problem.model_validate(self.problem_table)
        except ValidationError as exc:
            raise ConfigError(self.source, _pydantic_problems("problem", exc)) from None
        self._base = base
        try:
            SolverOptions(**self.solver_table)
        except (TypeError, ValueError) as exc:
            raise self._error("solver", str(exc)) from None
        problems: list[tuple[str, str]] = []
        for member in self._iter_members(collect=problems):
            pass
        if problems:
            raise ConfigError(self.source, problems[:20])

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
        varied_problem = False
        for axis, i in zip(self.axes, position):
            for field, value in zip(axis.fields, axis.values[i]):
                try:
                    _set_field(problem, solver, field, value)
                except KeyError as exc:
                    raise self._error(f"sweep.{axis.name}", f"cannot set {field}: {exc.args[0]}") from None
                varied_problem |= field.split(".")[0] not in SOLVER_FIELDS
        label = ", ".join(f"{a.name}={a.coords[i]!r}" for a, i in zip(self.axes, position))
        try:
            built = Problem.model_validate(problem) if varied_problem else self._base
        except ValidationError as exc:
            raise ConfigError(self.source, [(f"{p} (member {label})", m) for p, m in _pydantic_problems("problem", exc)]) from None
        try:
            opts = SolverOptions(**solver)
        except (TypeError, ValueError) as exc:
            raise self._error(f"solver (member {label})", str(exc)) from None
        return Member(index, position, built, opts)

    # -- description ------------------------------------------------------------------------
    @property
    def base_problem(self) -> Problem:
        return self._base

    def varies_grid(self) -> bool:
        return any(f.split(".")[0] in GRID_FIELDS for a in self.axes for f in a.fields)

    def canonical_json(self) -> str:
        """The sweep as canonical JSON: what the fingerprint hashes."""
        doc = {
            "problem": json.loads(self._base.model_dump_json()) if not self.problem_table else self.problem_table,
            "solver": self.solver_table,
            "sweep": self.axes_table,
        }
        return json.dumps(doc, sort_keys=True, default=repr)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of :meth:`canonical_json`: equal for equal sweeps, whatever the file's layout."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

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
