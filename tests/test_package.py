"""The package's public face (``topaz_nb/__init__.py``), the former module
paths kept for notebooks, and the layering contracts that keep the folders
honest (``[tool.importlinter]`` in pyproject.toml)."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import topaz_nb
from topaz_nb import errors

REPO = Path(__file__).resolve().parents[1]

# Module paths that notebooks written against earlier releases import, with a
# name each must still offer.
FORMER_PATHS = {
    "topaz_nb.transfer": ["Transfer", "CacheEntry", "ObjectInfo", "Fetched", "default_cache_dir"],
    "topaz_nb.client": ["TopazClient", "Status", "DEFAULT_BASE_URL"],
    "topaz_nb.comparison": ["Comparison"],
    "topaz_nb.widget": ["CompareView", "MODES", "TILE_PX"],
    "topaz_nb.gallery": ["Gallery", "Card"],
    "topaz_nb.review": ["Review", "HEADER", "DECISIONS"],
    "topaz_nb.shootout": ["Shootout"],
    "topaz_nb.errors": ["TopazError", "NotReady"],
    "topaz_nb.cli": ["main"],
    "topaz_nb.sandbox": ["Sandbox"],
    "topaz_nb.imaging": ["load_image", "SourceImage", "align", "encode"],
}


def test_every_public_name_imports_from_the_package() -> None:
    for name in topaz_nb.__all__:
        assert getattr(topaz_nb, name) is not None, name
    # Transfer, Gallery, Review and every error class come from the top too.
    for name in ("Transfer", "Gallery", "Review", "fidelity", "Fidelity"):
        assert name in topaz_nb.__all__
    classes = [v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == errors.__name__]
    assert classes
    for cls in classes:
        assert getattr(topaz_nb, cls.__name__) is cls


def test_unknown_names_are_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        topaz_nb.Nope  # noqa: B018


@pytest.mark.parametrize("path", sorted(FORMER_PATHS))
def test_former_module_paths_import_silently(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = importlib.import_module(path)
    for name in FORMER_PATHS[path]:
        assert getattr(module, name) is not None, f"{path}.{name}"


def test_a_former_path_names_the_same_objects_as_the_new_one() -> None:
    from topaz_nb.batch.gallery import Gallery
    from topaz_nb.gallery import Gallery as OldGallery
    from topaz_nb.storage.transfer import Transfer
    from topaz_nb.transfer import Transfer as OldTransfer

    assert OldTransfer is Transfer is topaz_nb.Transfer
    assert OldGallery is Gallery is topaz_nb.Gallery


def test_loading_the_extension_imports_no_image_or_network_stack() -> None:
    code = ("import sys, topaz_nb\n"
            "heavy = [m for m in ('PIL', 'requests', 'numpy', 'pyvips') if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, cwd=REPO).stdout.strip()
    assert out == "[]"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (the lint extra: pip install -e '.[test,lint]')")
    return subprocess.run([exe, str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
                          cwd=root, capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root)})


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(REPO / "topaz_nb", root / "topaz_nb",
                    ignore=shutil.ignore_patterns("__pycache__", "data", "static"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layering_contracts_hold(tree_copy: Path) -> None:
    done = _lint_imports(tree_copy)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 broken" in done.stdout or "broken" not in done.stdout.split("Contracts:")[-1]


@pytest.mark.parametrize(("module", "bad_import", "contract"), [
    ("imaging/align.py", "from ..api.client import TopazClient",
     "Imaging never imports storage or the API"),
    ("view/modes.py", "from ..storage.transfer import Transfer",
     "The view never imports storage or the API"),
    ("storage/budget.py", "from ..api.client import TopazClient",
     "Storage never imports the API"),
    ("errors.py", "from ._text import say", "No import circles"),
    ("imaging/tiles.py", "from ..comparison import Comparison", "Layers:"),
])
def test_a_bad_import_breaks_the_contract_that_forbids_it(
        tree_copy: Path, tmp_path: Path, module: str, bad_import: str, contract: str) -> None:
    root = tmp_path / "bad"
    shutil.copytree(tree_copy, root)
    target = root / "topaz_nb" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{bad_import}  # noqa\n",
                      encoding="utf-8")
    done = _lint_imports(root)
    assert done.returncode != 0
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), done.stdout[-3000:]


_KEY_IN_A_CELL = re.compile(r"%\s*(?:set_)?env\s+TOPAZ_API_KEY|TOPAZ_API_KEY['\"]\]\s*=|api_key\s*=\s*['\"]")
"""Ways of giving the key that leave it in a saved notebook (``%env`` also prints it)."""


def _code_blocks(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        import json

        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
                                  *sorted((REPO / "notebooks").glob("*.ipynb"))],
                         ids=lambda p: p.name)
def test_no_example_puts_the_key_into_a_notebook(path: Path) -> None:
    blocks = _code_blocks(path)
    assert blocks or path.parent.name == "docs", f"no code found in {path.name}"
    for block in blocks:
        assert not _KEY_IN_A_CELL.search(block), block


def test_the_readme_quickstart_logs_in_with_a_prompt() -> None:
    quickstart = next(b for b in _code_blocks(REPO / "README.md") if "%load_ext topaz_nb" in b)
    assert any(line.startswith("%topaz login") for line in quickstart.splitlines())
