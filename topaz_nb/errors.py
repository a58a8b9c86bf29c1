"""The one exception hierarchy of topaz-nb.

Every error a user can meet is a :class:`TopazError`, so a notebook can catch
one class, and the magic can print ``str(exc)`` as a single line that says what
went wrong and what to do next.  Messages never contain the API key or a
presigned URL's query string: they are built from redacted parts only.

Errors about a process carry data (``process_id``, ``status``, ``progress``,
``eta``, ``reason``) besides their message, so that each entry point can
phrase the next step in its own words through :func:`topaz_nb._text.say`: the
command line never suggests a magic, the magic never suggests ``api_key=``.
"""

from __future__ import annotations

from typing import Any


class TopazError(Exception):
    """Base class of every error raised by topaz-nb.

    ``address_problem`` is set (to what went wrong, without a next step) when
    the likely cure is a different API address: the next step then names the
    setting of the place where the message appears (``base_url=``,
    ``%config Topaz.base_url``, ``--api-url``), see :func:`topaz_nb._text.say`.
    """

    address_problem: str | None = None


class InvalidProcessId(TopazError, ValueError):
    """A process ID that is not a UUID; raised before any request is sent."""


class InvalidFilter(TopazError, ValueError):
    """A ``since`` or ``status`` filter of :meth:`TopazClient.recent` that means nothing;
    raised before any request is sent."""


class MissingApiKey(TopazError):
    """No API key was given and ``TOPAZ_API_KEY`` is not set.

    Without a message, the text is :attr:`HINT`, which is also what
    ``_text.no_key`` says to Python code (the other places word it their own
    way); ``detail`` is true when the raiser said something more specific (an
    empty key, say).
    """

    HINT = ("No Topaz API key: set TOPAZ_API_KEY before starting Python, or pass api_key= "
            "read from a file kept outside the notebook.")

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.HINT)
        self.detail = message is not None


class ApiError(TopazError):
    """The Topaz API answered with an error status.

    ``status_code`` is the HTTP status and ``server_message`` the ``message``
    field of the ``{code, message}`` body, when the server sent one.
    """

    def __init__(self, message: str, *, status_code: int | None = None,
                 server_message: str | None = None, process_id: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message
        self.process_id = process_id


class BadRequest(ApiError):
    """400: the API rejected the request as malformed."""


class AuthenticationError(ApiError):
    """401: the key is missing, wrong or expired; 403: it lacks access to the endpoint."""


class NotFound(ApiError):
    """404: unknown process, or past the 7-day retention (``process_id`` says which)."""


class NotReady(ApiError):
    """409 on the output: the process has not finished yet.

    ``status``, ``progress``, ``eta`` and ``reason`` come from the Status
    endpoint when they could be had, and are ``None`` otherwise.  A ``status``
    of ``Failed`` or ``Cancelled`` means the output will never exist.
    """

    def __init__(self, message: str, *, status: str | None = None,
                 progress: int | None = None, eta: Any = None, reason: str | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.progress = progress
        self.eta = eta
        self.reason = reason

    @property
    def failed(self) -> bool:
        """The process ended without an output: waiting would not help."""
        return self.status in ("Failed", "Cancelled")


class RateLimited(ApiError):
    """429: too many requests, still refused after the retries ran out."""


class ServerError(ApiError):
    """5xx: the API failed, still failing after the retries ran out."""


class ProcessFailed(TopazError):
    """A process ended in ``Failed`` or ``Cancelled``: it has no output.

    ``reason`` is the server's explanation when the status carried one.
    """

    def __init__(self, message: str, *, status: str, process_id: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.process_id = process_id
        self.reason = reason


class WaitTimeout(TopazError):
    """A wait for a process ran past its timeout."""


class TransferError(TopazError):
    """A presigned HEAD or GET failed (storage error, broken or short body).

    When storage refused the request, ``reason`` says why as storage put it
    (``"expired"``, ``"signature"``, ``"gone"``, ``"denied"``,
    ``"unexplained"`` or ``"other"``), with the HTTP ``status_code``, the
    ``storage_code`` and ``storage_message`` of its error document, the
    ``method``, and the object (``process_id``, ``side``) at its redacted
    ``url``, so that each place can word it (:func:`topaz_nb._text.say`).
    """

    def __init__(self, message: str = "", *, reason: str | None = None,
                 status_code: int | None = None, storage_code: str | None = None,
                 storage_message: str | None = None, method: str | None = None,
                 process_id: str | None = None, side: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = status_code
        self.storage_code = storage_code
        self.storage_message = storage_message
        self.method = method
        self.process_id = process_id
        self.side = side
        self.url = url


class LinkExpired(TransferError):
    """Storage refused a presigned link even after one refresh of it.

    The name is historical: ``reason`` says what storage said (expired, a
    signature it rejects, access denied, or nothing at all).  An object that
    is gone is a plain :class:`TransferError` with ``reason == "gone"``.
    """


class ImageError(TopazError):
    """A file could not be opened as an image (not an image, truncated, corrupt)."""


class ImageTooLarge(ImageError):
    """An image is larger than the Topaz API can produce, so it is refused unopened."""


class Cancelled(TopazError):
    """A download or HEAD was stopped through its ``cancel`` event.

    What had arrived is kept as a ``.part`` file, so running the same fetch
    again resumes where this one stopped.
    """


class NotSaved(TopazError):
    """Some files could not be saved; every other one was.

    One bad file never stops the rest, so this is raised only after all the
    others are saved.  ``saved`` is what the call returns when all goes well,
    holding the files that were saved; ``failures`` lists one
    ``(what, where, error)`` per file that was not: the file in words ("the
    output"), the path it was to take (``None`` when it never got one), and the
    ``OSError`` or :class:`TopazError` that stopped it.  The message has one
    line per failure; :func:`topaz_nb._text.say` words them for each place.
    """

    def __init__(self, message: str, *, saved: Any,
                 failures: list[tuple[str, str | None, Exception]]) -> None:
        super().__init__(message)
        self.saved = saved
        self.failures = failures
