"""Presigned objects and the disk cache: HEAD and GET against object storage
(streaming, resume, integrity checks, link refresh through a ``LinkSource``),
the cache layout and its locks, and the cache's disk bound.

May import: ``net`` and the shared vocabulary.  Never imports ``api`` (it
never sees the API key) nor anything above it.
"""
