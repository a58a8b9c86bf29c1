"""Every demo notebook runs top to bottom, and its outputs carry no secret.

Two runs per notebook: with no key (the notebook starts its own sandbox, as on
Binder), and with a recognisable fake key pointing at a sandbox started here,
which is the path a real ``TOPAZ_API_KEY`` takes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from topaz_nb.sandbox import Sandbox

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
FAKE_KEY = "sbx_FAKEKEY_do_not_leak_0123456789"
SIGNATURE = re.compile(r"(?i)(signature|x-amz-[a-z-]+)=")

pytestmark = pytest.mark.slow


def run_notebook(path: Path, env: dict[str, str], tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.km_kwargs = {}
    with _environ(env):
        client.execute()
    return nb


class _environ:
    def __init__(self, values: dict[str, str | None]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        import os

        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        import os

        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_outputs(nb: nbformat.NotebookNode, secrets: list[str]) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", (
                f"cell {cell.get('id')} failed: {output.get('ename')}: {output.get('evalue')}")
            text = json.dumps(output)
            for secret in secrets:
                assert secret not in text, f"cell {cell.get('id')} shows a secret"
            assert not SIGNATURE.search(text), f"cell {cell.get('id')} shows a presigned query"
    assert "widgets" not in nb.metadata


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01-quickstart.ipynb", "02-panel.ipynb", "03-batch-review.ipynb",
                     "04-model-shootout.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
        assert "widgets" not in nb.metadata, path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_without_a_key(path, tmp_path):
    nb = run_notebook(path, {"TOPAZ_API_KEY": None, "TOPAZ_API_URL": None,
                             "TOPAZ_NB_CACHE": str(tmp_path / "cache")}, tmp_path)
    check_outputs(nb, ["sbx_"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_with_a_key_and_never_shows_it(path, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with Sandbox(api_key=FAKE_KEY) as sb:
        env = {"TOPAZ_API_KEY": FAKE_KEY, "TOPAZ_API_URL": sb.base_url,
               "TOPAZ_PROCESS_IDS": " ".join(sb.demo_ids),
               "TOPAZ_NB_CACHE": str(tmp_path / "cache")}
        nb = run_notebook(path, env, work)
        assert any(r.headers.get("X-API-Key") == FAKE_KEY for r in sb.requests if r.server == "api")
    check_outputs(nb, [FAKE_KEY])
    # With a key the notebook works on the user's own account and folder: run
    # unattended, it leaves nothing beside itself (no review file, no copies).
    assert sorted(p.name for p in work.iterdir()) == []


def test_the_review_notebook_never_writes_into_the_users_review_file(tmp_path):
    """With a key, notebook 03 opens the user's real ``topaz-review.csv``: its
    demonstration decisions go elsewhere, and a person's decisions stay."""
    path = next(p for p in NOTEBOOKS if p.name == "03-batch-review.ipynb")
    work = tmp_path / "work"
    work.mkdir()
    review = work / "topaz-review.csv"
    with Sandbox(api_key=FAKE_KEY) as sb:
        rows = "".join(f"{pid},reject,decided by a person,,,2026-11-01T00:00:00+00:00\r\n"
                       for pid in sb.demo_ids)
        review.write_bytes(("process_id,decision,note,model,filename,reviewed_at\r\n"
                            + rows).encode())
        before = review.read_bytes()
        env = {"TOPAZ_API_KEY": FAKE_KEY, "TOPAZ_API_URL": sb.base_url,
               "TOPAZ_PROCESS_IDS": " ".join(sb.demo_ids),
               "TOPAZ_NB_CACHE": str(tmp_path / "cache")}
        nb = run_notebook(path, env, work)
    check_outputs(nb, [FAKE_KEY])
    assert review.read_bytes() == before
    assert sorted(p.name for p in work.iterdir()) == ["topaz-review.csv"]
