"""Fixtures shared by every test file: a running sandbox and small images."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from PIL import Image

from topaz_nb.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox (API + storage servers, demo jobs) for one test."""
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def make_image() -> Callable[..., Image.Image]:
    """``make_image((w, h), color="red", mode="RGB")``: a small solid image with a marker.

    A contrasting square in the top-left corner makes orientation and
    alignment mistakes visible in assertions.
    """

    def make(size: tuple[int, int] = (64, 48), color: object = (200, 60, 40),
             mode: str = "RGB") -> Image.Image:
        image = Image.new(mode, size, color)  # type: ignore[arg-type]
        marker = (max(1, size[0] // 8), max(1, size[1] // 8))
        image.paste(Image.new(mode, marker, "white"), (0, 0))
        return image

    return make
