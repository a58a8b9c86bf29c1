"""The former home of the gallery, kept so that notebooks importing it from here
go on working.  New code imports from :mod:`topaz_nb` or :mod:`topaz_nb.batch.gallery`."""

from .batch.gallery import Card, Gallery

__all__ = ["Card", "Gallery"]
