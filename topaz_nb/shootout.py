"""The former home of the shoot-out, kept so that notebooks importing it from here
go on working.  New code imports from :mod:`topaz_nb` or :mod:`topaz_nb.batch.shootout`."""

from .batch.shootout import Shootout

__all__ = ["Shootout"]
