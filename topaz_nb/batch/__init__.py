"""Several processes at once: the ``gallery`` (cards filled in the background),
the keyboard ``review`` (decisions in a CSV) and the model ``shootout``.

May import: ``comparison`` and everything below it.  The gallery may open a
review; the review never imports the gallery.
"""
