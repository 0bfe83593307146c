"""Take docs/dashboard.png: the Dask dashboard's status page while a sweep runs.

    apt-get install chromium chromium-driver && pip install selenium   # once
    python docs/screenshot_dashboard.py

Runs the quick-start sweep (configs/quickstart.toml, more seeds) on a 2-worker LocalCluster
and, once a third of its members are done, has headless Chromium (through Selenium: the
page draws over a websocket, in real time) render http://127.0.0.1:<port>/status (Task
Stream, Progress, memory, processing) into a PNG while the sweep goes on.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from distributed import Client

from mfg_ensemble import Sweep, run_sweep
from mfg_ensemble.ensemble.cluster import local_cluster

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "dashboard.png"


def screenshot(url: str, wait: float = 6.0) -> None:
    """Load ``url`` in headless Chromium, let the Bokeh plots draw for ``wait`` s, save OUT."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(url)
        time.sleep(wait)
        driver.save_screenshot(str(OUT))
    finally:
        driver.quit()


def main() -> None:
    if shutil.which("chromedriver") is None:
        raise SystemExit("needs Chromium and its driver: apt-get install chromium chromium-driver")
    sweep = Sweep.from_file(ROOT / "configs" / "quickstart.toml")
    axes = {**sweep.axes_table, "seed": {"count": 8}}
    sweep = Sweep(sweep.problem_table, sweep.solver_table, axes, name="dashboard")
    with (
        Client(local_cluster(n_workers=2, dashboard_address="127.0.0.1:0")) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        url = client.dashboard_link
        taker = threading.Thread(target=screenshot, args=(url,))

        def take(progress) -> None:  # the sweep is well under way: the task stream has bars
            if not taker.is_alive() and taker.ident is None and progress.finished >= len(sweep) // 3:
                taker.start()

        run_sweep(sweep, Path(tmp) / "s.zarr", client=client, on_progress=take)
        taker.join()
    print(f"wrote {OUT} ({url})")


if __name__ == "__main__":
    main()
