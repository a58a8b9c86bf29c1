"""The Binder set-up works: a fresh venv with exactly binder/requirements.txt runs every notebook.

This is what repo2docker does (``pip install -r binder/requirements.txt`` from
the repository root), minus the container.  It needs the package registry, as
Binder itself does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
REQUIREMENTS = ROOT / "binder" / "requirements.txt"

pytestmark = pytest.mark.slow

RUNNER = r"""
import sys, json, pathlib, nbformat
from nbclient import NotebookClient
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(pathlib.Path(path).parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    print(path, "errors:", len(errors))
    if errors:
        print(json.dumps(errors[0])[:2000])
        sys.exit(1)
"""


def test_requirements_are_pinned_and_install_the_repo():
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert "." in lines, "binder/requirements.txt must install the repository itself"
    unpinned = [ln for ln in lines if ln != "." and not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[^=]+$", ln)]
    assert unpinned == [], f"unpinned lines: {unpinned}"
    names = {ln.split("==")[0].lower() for ln in lines if "==" in ln}
    assert {"jupyterlab", "anywidget", "ipywidgets", "pillow", "requests"} <= names


def test_fresh_venv_from_binder_requirements_runs_every_notebook(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOPAZ_", "JUPYTER", "IPYTHON"))}
    env.update(HOME=str(tmp_path / "home"), TOPAZ_NB_CACHE=str(tmp_path / "cache"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTER_DATA_DIR=str(tmp_path / "jdata"),
               IPYTHONDIR=str(tmp_path / "ipython"), PATH=f"{env_dir / 'bin'}:{env.get('PATH', '')}")
    work = tmp_path / "notebooks"
    work.mkdir()
    copies = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        (work / nb.name).write_bytes(nb.read_bytes())
        copies.append(str(work / nb.name))
    # The kernel must be the venv's own, as on Binder.
    subprocess.run([str(python), "-m", "ipykernel", "install", "--user", "--name", "python3"],
                   env=env, check=True, capture_output=True, timeout=120)
    run = subprocess.run([str(python), "-c", RUNNER, *copies], env=env, capture_output=True,
                         text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("errors: 0") == len(copies)
    check = subprocess.run([str(python), "-c", "import topaz_nb, sys; print(topaz_nb.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert str(ROOT) in check.stdout or "site-packages" in check.stdout
    assert sys.executable != str(python)
