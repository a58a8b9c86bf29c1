"""The still composite's page builder: what ``save_html`` embeds, read as text."""

from __future__ import annotations

import json
import re

import pytest

from topaz_nb.view.composite import standalone_page

HOSTILE = ["<!--<script>", "</script><script>alert(1)</script>", "line\u2028sep\u2029arator",
           "a & b > c <!-- -->", "</SCRIPT >", "<\\/script>"]


def _state_text(page: str) -> str:
    match = re.search(r'<script type="application/json" id="topaz-compare-state">(.*?)</script>',
                      page, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_embedded_state_has_no_markup_and_reads_back_the_same() -> None:
    state = {"labels": HOSTILE, "panes": [{"name": n} for n in HOSTILE], "image": b"<\x00>"}
    page = standalone_page(title=" vs ".join(HOSTILE), state=state, esm="export default {};",
                           css="")
    text = _state_text(page)
    for char in "<>&\u2028\u2029":
        assert char not in text
    assert page.count("</script>") == 3  # the state, the code and the module: nothing else
    data = json.loads(text)
    assert data["labels"] == HOSTILE and [p["name"] for p in data["panes"]] == HOSTILE
    assert "<script>" not in page.split("<body>")[0]  # the title is escaped too


@pytest.mark.parametrize("esm", ["// </script>", "// <!-- a comment", "// <script>"])
def test_code_that_would_escape_its_element_is_refused(esm: str) -> None:
    with pytest.raises(ValueError, match="cannot be embedded"):
        standalone_page(title="t", state={}, esm=esm, css="")
