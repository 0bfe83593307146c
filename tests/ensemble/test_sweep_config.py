"""Sweep files: what a malformed file is told, and what a valid one expands to.

Every malformed file raises ``ConfigError`` before anything runs, and its message names the
file, the field path (``problem.sigma``, ``solver.damping``, ``sweep.zip.res`` ...) and what
is allowed there. Nothing in a file is ever evaluated: a string is a string.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from mfg_ensemble import ConfigError, Problem, Problem2D, Sweep

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# A valid base: a log coupling and a gaussian m0, so that "coupling.strength" and "m0.std"
# are fields an axis may vary.
PROBLEM = """
[problem]
nx = 31
nt = 11
sigma = 0.2
coupling = { kind = "log", strength = 0.1 }
m0 = { kind = "gaussian", mean = 0.3, std = 0.1 }
"""
SOLVER = """
[solver]
fp = "fv"
max_iter = 20
seed = 7
"""
BASE = PROBLEM + SOLVER

EXPLOIT = "__import__('os').system('touch PWNED')"


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problem_with(line: str) -> str:
    """BASE with ``line`` added to its [problem] table (a later key wins nowhere: TOML forbids
    repeats, so the overridden keys are dropped first)."""
    key = line.split("=", 1)[0].strip()
    kept = "\n".join(ln for ln in PROBLEM.splitlines() if ln.split("=", 1)[0].strip() != key)
    return kept + "\n" + line + "\n" + SOLVER


def solver_with(line: str) -> str:
    key = line.split("=", 1)[0].strip()
    kept = "\n".join(ln for ln in SOLVER.splitlines() if ln.split("=", 1)[0].strip() != key)
    return PROBLEM + kept + "\n" + line + "\n"


# (id, file text, regex the message must match after "invalid sweep <file>:")
MALFORMED = [
    # not a sweep at all
    ("empty file", "", r"the file is empty"),
    ("only comments", "# nothing here\n\n", r"the file is empty"),
    ("nested 500 deep", "a = " + "[" * 500 + "]" * 500 + "\n", r"nested too deeply"),
    ("not UTF-8", b"name = '\xff\xfe'\n", r"not a UTF-8 text file"),
    (
        "a grid that cannot fit in memory",
        problem_with("nx = 10000000000"),
        r"problem\.nx: nx = 10000000000 with nt = 11 needs about .* GiB per solve .* more than this machine's",
    ),
    (
        "particles that cannot fit in memory",
        BASE.replace('fp = "fv"', 'fp = "particles"') + "[sweep]\nn_particles = [1000, 10000000000]\n",
        r"solver\.n_particles \(member 1: n_particles=10000000000\): n_particles = 10000000000 needs about .* GiB",
    ),
    # wrong types: strict, a number must be written as a number
    ("nx is a word", problem_with('nx = "a"'), r"problem\.nx: Input should be a valid integer \(got 'a'\)"),
    (
        "sigma is a numeric string",
        problem_with('sigma = "0.1"'),
        r"problem\.sigma: Input should be a valid number \(got '0\.1'\)",
    ),
    ("nx is a float", problem_with("nx = 31.0"), r"problem\.nx: Input should be a valid integer \(got 31\.0\)"),
    (
        "sigma is a boolean",
        problem_with("sigma = true"),
        r"problem\.sigma: Input should be a valid number \(got True\)",
    ),
    (
        "max_iter is a string",
        solver_with('max_iter = "20"'),
        r"solver\.max_iter: Input should be a valid integer \(got '20'\)",
    ),
    (
        "anderson is a boolean",
        solver_with("anderson = true"),
        r"solver\.anderson: Input should be a valid integer \(got True\)",
    ),
    ("problem is not a table", "problem = 3\n", r"problem: Input should be a valid dictionary \(got 3\)"),
    # unknown keys, with the allowed ones listed
    (
        "unknown top-level key",
        "sweeps = {}\n" + BASE,
        r"sweeps: unknown field; allowed: name, description, problem, solver, sweep",
    ),
    (
        "unknown key in [problem]",
        problem_with("sigmaa = 0.1"),
        r"problem\.sigmaa: unknown field; allowed: lo, hi, T, nx, nt, sigma, .*bc",
    ),
    (
        "unknown key in [solver]",
        solver_with("dampng = 0.5"),
        r"solver\.dampng: unknown field; allowed: fp, .*damping.*max_iter",
    ),
    (
        "unknown key in a family",
        problem_with('m0 = { kind = "gaussian", std = 0.1, width = 2 }'),
        r"problem\.m0\.width: unknown field; allowed: kind, mean, std",
    ),
    # ranges of the problem
    (
        "negative sigma",
        problem_with("sigma = -0.1"),
        r"problem\.sigma: Input should be greater than or equal to 0 \(got -0\.1\)",
    ),
    ("nx below 7", problem_with("nx = 5"), r"problem\.nx: Input should be greater than or equal to 7 \(got 5\)"),
    ("T zero", problem_with("T = 0"), r"problem\.T: Input should be greater than 0 \(got 0\)"),
    ("T negative", problem_with("T = -1.0"), r"problem\.T: Input should be greater than 0 \(got -1\.0\)"),
    ("lo equals hi", problem_with("lo = 1.0"), r"problem\.lo: lo must be < hi, got lo=1\.0, hi=1\.0"),
    ("lo above hi", problem_with("lo = 2.0"), r"problem\.lo: lo must be < hi, got lo=2\.0, hi=1\.0"),
    ("bc unknown", problem_with('bc = "open"'), r"problem\.bc: Input should be 'reflect' or 'periodic' \(got 'open'\)"),
    # families
    (
        "unknown family kind",
        problem_with('m0 = { kind = "cauchy" }'),
        r"problem\.m0\.kind: unknown kind 'cauchy'; allowed: 'gaussian', 'uniform', 'mixture', 'values'$",
    ),
    (
        "family without kind",
        problem_with("coupling = { strength = 1.0 }"),
        r"problem\.coupling\.kind: missing: a table needs kind = one of "
        r"'zero', 'linear', 'log', 'power', 'mean_quadratic'",
    ),
    (
        "gaussian std zero",
        problem_with('m0 = { kind = "gaussian", std = 0.0 }'),
        r"problem\.m0\.std: Input should be greater than 0 \(got 0\.0\)",
    ),
    (
        "gaussian std negative",
        problem_with('m0 = { kind = "gaussian", std = -0.1 }'),
        r"problem\.m0\.std: Input should be greater than 0 \(got -0\.1\)",
    ),
    ("gaussian std missing", problem_with('m0 = { kind = "gaussian" }'), r"problem\.m0\.std: required, but missing"),
    (
        "mixture of unequal lengths",
        problem_with('m0 = { kind = "mixture", means = [0.2, 0.6], stds = [0.1] }'),
        r"problem\.m0\.means: means, stds and weights must have the same length",
    ),
    (
        "mixture std negative",
        problem_with('m0 = { kind = "mixture", means = [0.2, 0.6], stds = [0.1, -0.1] }'),
        r"problem\.m0\.stds\.1: Input should be greater than 0 \(got -0\.1\)",
    ),
    # solver options
    (
        "damping above 1",
        solver_with("damping = 1.5"),
        r"solver\.damping: Input should be less than or equal to 1 \(got 1\.5\)",
    ),
    (
        "fp unknown",
        solver_with('fp = "spectral"'),
        r"solver\.fp: Input should be 'particles' or 'fv' \(got 'spectral'\)",
    ),
    (
        "negative root seed",
        solver_with("seed = -1"),
        r"solver\.seed: Input should be greater than or equal to 0 \(got -1\)",
    ),
    # axes
    ("empty axis", BASE + "[sweep]\nsigma = []\n", r"sweep\.sigma: an axis needs at least one value"),
    (
        "empty axis table",
        BASE + "[sweep]\nsigma = { values = [] }\n",
        r"sweep\.sigma\.values: an axis needs at least one value",
    ),
    (
        "axis is a scalar",
        BASE + "[sweep]\nsigma = 0.1\n",
        r"sweep\.sigma: must be a list of values or a table \{values = \[\.\.\.\]\}, got 0\.1",
    ),
    (
        "repeated axis values",
        BASE + "[sweep]\nsigma = [0.1, 0.1]\n",
        r"sweep\.sigma: has repeated values \[0\.1, 0\.1\]",
    ),
    (
        "unknown key in an axis table",
        BASE + "[sweep]\nsigma = { values = [0.1], step = 2 }\n",
        r"sweep\.sigma\.step: unknown field; allowed: field, values, count",
    ),
    (
        "zip of unequal lengths",
        BASE + "[sweep.zip.res]\nnx = [31, 41]\nnt = [11]\n",
        r"sweep\.zip\.res: the lists of a zip group must all have the same length, got lengths \{'nx': 2, 'nt': 1\}",
    ),
    (
        "same field in two axes",
        BASE + '[sweep]\nsigma = [0.1, 0.2]\nnoise = { field = "sigma", values = [0.3] }\n',
        r"sweep\.noise: field 'sigma' is already varied by axis 'sigma'; vary each field in one axis only",
    ),
    (
        "same field in an axis and a zip",
        BASE + "[sweep]\nnx = [31, 41]\n[sweep.zip.res]\nnx = [31, 41]\nnt = [11, 21]\n",
        r"sweep\.res: field 'nx' is already varied by axis 'nx'",
    ),
    (
        "a family and its field",
        BASE + '[sweep]\nm0 = [{ kind = "uniform" }]\nwidth = { field = "m0.std", values = [0.1] }\n',
        r"sweep\.width: field 'm0\.std' is already varied by axis 'm0'",
    ),
    (
        "axis of an unknown field",
        BASE + "[sweep]\ngamma = [1, 2]\n",
        r"sweep\.gamma: unknown field 'gamma'; axes can vary lo, hi, T, nx, nt, sigma, .*max_iter",
    ),
    (
        "axis of an unknown family field",
        BASE + '[sweep]\nc = { field = "coupling.gain", values = [1.0] }\n',
        r"sweep\.c: unknown field 'coupling\.gain': the base problem's coupling is 'log', "
        r"whose fields are coupling\.kind, coupling\.strength, coupling\.delta",
    ),
    (
        "dotted path into a number",
        BASE + '[sweep]\ns = { field = "sigma.value", values = [1.0] }\n',
        r"sweep\.s: 'sigma\.value': sigma has no fields; "
        r"dotted paths reach into the families potential, coupling, m0, terminal",
    ),
    (
        "count on a non-seed axis",
        BASE + "[sweep]\nsigma = { count = 3 }\n",
        r"sweep\.sigma: count = N is only for the seed axis",
    ),
    (
        "count is a string",
        BASE + '[sweep]\nseed = { count = "4" }\n',
        r"sweep\.seed\.count: Input should be a valid integer \(got '4'\)",
    ),
    (
        "count zero",
        BASE + "[sweep]\nseed = { count = 0 }\n",
        r"sweep\.seed\.count: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "axis named x",
        BASE + '[sweep]\nx = { field = "sigma", values = [0.1] }\n',
        r"sweep\.x: 'x' is a name of the store itself; these are taken: .*iteration",
    ),
    # nothing is evaluated
    (
        "expression as a value",
        problem_with(f'sigma = "{EXPLOIT}"'),
        r"problem\.sigma: Input should be a valid number \(got \"__import__",
    ),
    (
        "expression in an axis",
        BASE + f'[sweep]\nsigma = ["{EXPLOIT}"]\n',
        r"problem\.sigma \(member 0: sigma=\"__import__.*\): Input should be a valid number",
    ),
    # a value that fails for one member only names that member (and only it)
    (
        "one bad member",
        BASE + "[sweep]\nsigma = [0.1, -0.2]\n",
        r"^problem\.sigma \(member 1: sigma=-0\.2\): Input should be greater than or equal to 0 \(got -0\.2\)$",
    ),
    (
        "one bad solver member",
        BASE + "[sweep]\nseed = { count = 2 }\ndamping = [0.5, 1.5]\n",
        r"solver\.damping \(member 1: seed=0, damping=1\.5\): Input should be less than or equal to 1",
    ),
    (
        "not TOML",
        "[problem\nnx = 31\n",
        r"not valid TOML: Expected '\]' at the end of a table declaration \(at line 1, column 9\)",
    ),
    ("not UTF-8", b"[problem]\nsigma = 0.1 # \xff\n", r"not a UTF-8 text file"),
]


@pytest.mark.parametrize("text,pattern", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_file_is_refused_naming_file_field_and_what_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes, pattern: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad sweep.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        Sweep.from_file(path)
    message = str(info.value)
    assert message.startswith(f"invalid sweep {path}:\n"), message
    details = message.split("\n", 1)[1].strip()
    assert re.search(pattern, details, flags=re.MULTILINE), details
    assert not (tmp_path / "PWNED").exists()


def test_malformed_cases_cover_enough() -> None:
    assert len(MALFORMED) >= 18


def test_a_bad_member_is_reported_once_and_the_good_ones_not(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "[sweep]\nsigma = [0.1, -0.2, 0.3, -0.4]\nseed = { count = 2 }\n")
    with pytest.raises(ConfigError) as info:
        Sweep.from_file(path)
    members = re.findall(r"\(member (\d+):", str(info.value))
    assert members == ["2", "3", "6", "7"]  # sigma index 1 and 3, both seeds (C order)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(
        ConfigError, match=rf"invalid sweep {re.escape(str(path))}:\n  cannot read the file: No such file or directory"
    ):
        Sweep.from_file(path)


def test_expression_strings_are_never_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for where in (
        f'[problem]\nsigma = "{EXPLOIT}"\n',
        f'{BASE}[sweep]\nnx = ["{EXPLOIT}"]\n',
        f'name = "{EXPLOIT}"\n{BASE}',
    ):
        try:
            Sweep.from_file(write(tmp_path, where)).describe()
        except ConfigError:
            pass
    assert not (tmp_path / "PWNED").exists()


def test_errors_from_python_name_the_python_source() -> None:
    with pytest.raises(
        ConfigError, match=r"invalid sweep <python>:\n  problem\.sigma: Input should be greater than or equal to 0"
    ):
        Sweep(problem={"sigma": -1.0}, solver={}, axes={})


# -- valid sweeps --------------------------------------------------------------------------


def test_axes_are_crossed_in_c_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE + '[sweep]\nsigma = [0.1, 0.2, 0.3]\ncoupling = { field = "coupling.strength", values = [0.5, 1.0] }\n',
    )
    sweep = Sweep.from_file(path)
    assert len(sweep) == 6 and sweep.shape == (3, 2)
    got = [(m.index, m.position, m.problem.sigma, m.problem.coupling.strength) for m in sweep.members()]
    expected = [
        (i, pos, [0.1, 0.2, 0.3][pos[0]], [0.5, 1.0][pos[1]])
        for i, pos in enumerate(itertools.product(range(3), range(2)))
    ]
    assert got == expected  # the last axis varies fastest
    assert [sweep.member(i).position for i in range(6)] == [p for _, p, _, _ in expected]


def test_named_axis_sets_a_family_field_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[sweep]\ncoupling = { field = "coupling.strength", values = [0.5, 1.0, 2.0] }\n')
    sweep = Sweep.from_file(path)
    (axis,) = sweep.axes
    assert axis.name == "coupling" and axis.fields == ("coupling.strength",) and axis.coords == (0.5, 1.0, 2.0)
    couplings = [m.problem.coupling for m in sweep.members()]
    assert [c.strength for c in couplings] == [0.5, 1.0, 2.0]
    assert {c.kind for c in couplings} == {"log"} and {c.delta for c in couplings} == {0.01}
    assert {m.problem.m0.std for m in sweep.members()} == {0.1}


def test_family_field_axis_on_a_default_family_keeps_its_kind() -> None:
    """m0 not given: the base's default (uniform) is not a table to reach into, so m0.std is
    unknown; a potential given only as its kind is filled from the base."""
    with pytest.raises(ConfigError, match=r"the base problem's m0 is 'uniform', whose fields are m0\.kind"):
        Sweep(problem={"nx": 31}, solver={"fp": "fv"}, axes={"w": {"field": "m0.std", "values": [0.1]}})
    sweep = Sweep(
        problem={"nx": 31, "potential": {"kind": "quadratic"}},
        solver={"fp": "fv"},
        axes={"potential.center": [0.2, 0.8]},
    )
    assert [(m.problem.potential.kind, m.problem.potential.center) for m in sweep.members()] == [
        ("quadratic", 0.2),
        ("quadratic", 0.8),
    ]


def test_seed_count_gives_replicates_whose_seeds_depend_on_the_replicate_only(tmp_path: Path) -> None:
    root = 7
    seed_first = Sweep.from_file(
        write(tmp_path, BASE + "[sweep]\nseed = { count = 4 }\nsigma = [0.1, 0.2, 0.3]\n", "a.toml")
    )
    seed_last = Sweep.from_file(write(tmp_path, BASE + "[sweep]\nsigma = [0.3, 0.1]\nseed = { count = 4 }\n", "b.toml"))
    expected = [
        int(np.random.SeedSequence(root, spawn_key=(k,)).generate_state(1, dtype=np.uint64)[0]) for k in range(4)
    ]
    assert len(set(expected)) == 4

    for sweep in (seed_first, seed_last):
        axis = next(a for a in sweep.axes if a.name == "seed")
        assert axis.coords == (0, 1, 2, 3)
        by_point = {}
        for m in sweep.members():
            k = m.position[[a.name for a in sweep.axes].index("seed")]
            assert m.solver.seed == expected[k]
            by_point.setdefault(m.problem.sigma, []).append(m.solver.seed)
        assert all(seeds == expected for seeds in by_point.values())  # common random numbers
    # members built one by one, in any order, get the same seeds
    for i in reversed(range(len(seed_last))):
        assert seed_last.member(i).solver.seed == expected[seed_last.member(i).position[1]]


def test_explicit_seed_list_is_used_as_is(tmp_path: Path) -> None:
    sweep = Sweep.from_file(write(tmp_path, BASE + "[sweep]\nseed = [11, 5]\n"))
    assert [m.solver.seed for m in sweep.members()] == [11, 5]
    assert sweep.axes[0].coords == (11, 5)


def test_zip_group_varies_fields_together(tmp_path: Path) -> None:
    text = BASE + "[sweep]\nsigma = [0.1, 0.2]\n[sweep.zip.resolution]\nnx = [31, 61, 121]\nnt = [11, 21, 41]\n"
    sweep = Sweep.from_file(write(tmp_path, text))
    assert len(sweep) == 6 and [a.name for a in sweep.axes] == ["sigma", "resolution"]
    res = sweep.axes[1]
    assert res.fields == ("nx", "nt") and res.coords == (0, 1, 2)
    got = [(m.problem.sigma, m.problem.nx, m.problem.nt) for m in sweep.members()]
    assert got == [(s, nx, nt) for s in (0.1, 0.2) for nx, nt in ((31, 11), (61, 21), (121, 41))]
    assert sweep.varies_grid()


def test_solver_fields_can_be_axes(tmp_path: Path) -> None:
    sweep = Sweep.from_file(write(tmp_path, BASE + '[sweep]\nfp = ["fv", "particles"]\ndamping = [0.5, 1.0]\n'))
    assert [(m.solver.fp, m.solver.damping) for m in sweep.members()] == [
        ("fv", 0.5),
        ("fv", 1.0),
        ("particles", 0.5),
        ("particles", 1.0),
    ]
    assert {m.solver.max_iter for m in sweep.members()} == {20}


def test_python_constructor_and_describe() -> None:
    sweep = Sweep(
        problem={"nx": 31, "nt": 11, "m0": {"kind": "gaussian", "std": 0.1}},
        solver={"fp": "fv", "seed": np.int64(3)},  # NumPy scalars are plain numbers here
        axes={"sigma": list(np.array([0.1, 0.2])), "seed": {"count": 2}},
    )
    assert len(sweep) == 4
    text = sweep.describe()
    assert "4 member(s)" in text and "axis sigma (2): sigma = 0.1, 0.2" in text and "axis seed (2): seed = 0, 1" in text
    assert "[3] sigma=0.2, seed=1" in text
    assert "... and 1 more" in sweep.describe(limit=3)


def test_fingerprint_ignores_layout_and_sees_values(tmp_path: Path) -> None:
    a = BASE + "[sweep]\nsigma = [0.1, 0.2]\nseed = { count = 2 }\n"
    b = (
        "# the same sweep, written differently\n"
        + "\n\n".join(
            line.replace(" = ", "   =   ") + "   # comment" if "=" in line else line for line in a.splitlines()
        )
        + "\n"
    )
    c = a.replace("0.2]", "0.25]")
    d = a.replace("max_iter = 20", "max_iter = 21")
    fa, fb, fc, fd = (
        Sweep.from_file(write(tmp_path, t, f"{n}.toml")).fingerprint for n, t in zip("abcd", (a, b, c, d))
    )
    assert fa == fb
    assert len({fa, fc, fd}) == 3
    # an explicit default is the same sweep as leaving it out
    assert (
        Sweep.from_file(
            write(tmp_path, a.replace("[solver]\n", '[solver]\nhjb_variant = "js"\n'), "e.toml")
        ).fingerprint
        == fa
    )


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(config: Path) -> None:
    sweep = Sweep.from_file(config)
    assert len(sweep) >= 1
    assert all(isinstance(m.problem, (Problem, Problem2D)) for m in sweep.members())


def test_shipped_configs_are_a_sweep_of_the_expected_size() -> None:
    assert len(Sweep.from_file(CONFIGS / "quickstart.toml")) == 24


@pytest.mark.parametrize("name", ["crowd_log.toml", "lq_game.toml", "two_exits.toml"])
def test_single_problem_configs_load_as_problems(name: str) -> None:
    problem = Problem.from_file(CONFIGS / name)
    assert problem == Sweep.from_file(CONFIGS / name).base_problem
