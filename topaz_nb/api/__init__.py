"""The Topaz Image API: ``client.TopazClient`` is the only code that holds the
API key and the only code that talks to the API host (links, status,
listings), with typed answers and the API's errors.

May import: ``net`` and the shared vocabulary.  Never imports ``storage``:
presigned downloads are handed their links, never the key.
"""
