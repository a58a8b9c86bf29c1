"""Images, once they are files: open safely (``source``), colour to sRGB,
placement of the input on the output's grid (``align``), tiles, the tiled
pyramid of a large image, the decoded and preview caches, and ``fidelity``.

May import: the shared vocabulary only.  Never imports ``storage`` or ``api``:
the paths of derived files (previews, pyramids, fidelity) are handed to it by
the caller, which knows the cache layout.
"""

from .source import (
    MAX_PIXELS,
    MAX_SIDE,
    DecodedCache,
    ImageInfo,
    Placement,
    SourceImage,
    TileSource,
    align,
    encode,
    load_image,
    scale_factor,
)

__all__ = [
    "MAX_PIXELS", "MAX_SIDE", "DecodedCache", "ImageInfo", "Placement", "SourceImage",
    "TileSource", "align", "encode", "load_image", "scale_factor",
]
