"""The Binder set-up works: a fresh venv with exactly binder/requirements.txt runs every notebook.

This is what repo2docker does (``pip install -r binder/requirements.txt`` from
the repository root), minus the container.  It needs the package registry, as
Binder itself does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import venv
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parents[1]
REQUIREMENTS = ROOT / "binder" / "requirements.txt"
RUNTIME = ROOT / "binder" / "runtime.txt"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_saved_as_jupyter_saves_them(path: Path) -> None:
    """Opening and saving a notebook leaves it unchanged in git.

    JupyterLab writes the kernel's ``language_info`` and the canonical
    nbformat text on save; the committed files already carry both, for the
    Python that Binder runs, and no outputs or widget state.
    """
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    assert nb.metadata["kernelspec"] == {"display_name": "Python 3 (ipykernel)",
                                         "language": "python", "name": "python3"}
    info = nb.metadata["language_info"]
    assert info["name"] == "python" and info["pygments_lexer"] == "ipython3"
    assert info["codemirror_mode"] == {"name": "ipython", "version": 3}
    runtime = RUNTIME.read_text().strip().removeprefix("python-")
    assert info["version"].startswith(runtime + "."), (info["version"], runtime)
    assert "widgets" not in nb.metadata
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert text == nbformat.writes(nb) + "\n"


@pytest.mark.slow
def test_requirements_are_pinned_and_install_the_repo():
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert "." in lines, "binder/requirements.txt must install the repository itself"
    unpinned = [ln for ln in lines if ln != "." and not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[^=]+$", ln)]
    assert unpinned == [], f"unpinned lines: {unpinned}"
    names = {ln.split("==")[0].lower() for ln in lines if "==" in ln}
    assert {"jupyterlab", "anywidget", "ipywidgets", "pillow", "requests"} <= names


@pytest.mark.slow
def test_fresh_venv_from_binder_requirements_runs_every_notebook(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
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
                         text=True, timeout=1200, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("errors: 0") == len(copies)
    # The notebooks ran on the venv's own kernel ...
    spec = json.loads((tmp_path / "jdata" / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["argv"][0] == str(python)
    # ... importing the installed package (from outside the checkout), front end included.
    check = subprocess.run(
        [str(python), "-c", ("import topaz_nb.widget as w; print(w.__file__);"
                             " print('function render(' in w.CompareView._esm)")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    where, has_render = check.stdout.split()
    assert Path(where).is_relative_to(env_dir), check.stdout + check.stderr
    assert has_render == "True"
