"""The former home of the review, kept so that notebooks importing it from here
go on working.  New code imports from :mod:`topaz_nb` or :mod:`topaz_nb.batch.review`."""

from .batch.review import DECISIONS, HEADER, ORDERS, Review, ReviewStrip

__all__ = ["DECISIONS", "HEADER", "ORDERS", "Review", "ReviewStrip"]
