"""What the API client and the storage layer share to speak HTTP: one retry
policy (``retry``: ``Retry-After`` capped, a time budget per request, a short
one for unreachable hosts) and one log filter (``logsafe``: presigned query
strings scrubbed from urllib3's debug lines).

May import: the shared vocabulary only.  Knows neither the API nor the cache.
"""
