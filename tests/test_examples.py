"""The examples run headlessly, as plain scripts, and make their figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_quickstart_notebook_runs_headlessly(tmp_path) -> None:
    script = EXAMPLES / "quickstart_sweep.py"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "dashboard:" in proc.stdout and "members done: 9 of 9" in proc.stdout, proc.stdout
    report = tmp_path / "quickstart_small_report"
    names = {
        "density_sigma=0.1.png",
        "density_sigma=0.2.png",
        "density_sigma=0.3.png",
        "final_density_sigma.png",
        "value_slices.png",
        "convergence.png",
        "summary.png",
    }
    assert {p.name for p in report.iterdir()} == names
    for png in [*report.iterdir(), tmp_path / "mean_position.png"]:
        assert png.stat().st_size > 2000 and png.read_bytes()[:8] == PNG, png
    assert (tmp_path / "quickstart_small.zarr").is_dir()


def test_the_example_is_a_jupytext_percent_script() -> None:
    text = (EXAMPLES / "quickstart_sweep.py").read_text(encoding="utf-8")
    assert "format_name: percent" in text and text.count("# %%") >= 8 and "# %% [markdown]" in text


@pytest.mark.slow
def test_the_quickstart_runs_as_a_real_notebook(tmp_path) -> None:
    """jupytext turns the example into a notebook; nbclient runs it in a Jupyter kernel, with
    worker processes (local_cluster). The figure cell that ends on a bare Figure shows a
    picture, and the progress display of run_sweep lives in its own cell: a tqdm widget over
    the members and a table of the running members that ends with the final counts."""
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(EXAMPLES / "quickstart_sweep.py")
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert cells[0].source.startswith("%matplotlib inline")  # the magic jupytext uncommented
    run = next(c for c in cells if "run_sweep(" in c.source)
    kinds = {key for out in run.outputs for key in out.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in kinds, run.outputs  # the tqdm widget
    html = "".join(out["data"].get("text/html", "") for out in run.outputs if "data" in out)
    assert "9/9 members: done 9, failed 0, running 0, queued 0" in html, html
    figure = next(c for c in cells if c.source.rstrip().endswith("\nfig"))
    assert any("image/png" in out.get("data", {}) for out in figure.outputs), figure.outputs
    assert (tmp_path / "quickstart_small.zarr").is_dir()
    last = "".join(out.get("text", "") for out in cells[-1].outputs)
    assert "members done: 9 of 9" in last, cells[-1].outputs
