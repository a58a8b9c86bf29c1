"""A local Topaz-compatible server: the API host plus a separate storage host.

:class:`Sandbox` runs two real HTTP servers on loopback ports.  The API server
speaks the Download and Status operations of the Topaz Image API under
``/image/v1`` and hands out presigned links; the storage server, on its own
port like real object storage, serves those links (HEAD/GET, ranges, ETags)
and never needs the API key.  Tests, demo notebooks without an API key and
``topaz-nb sandbox`` all use it::

    with Sandbox() as sb:
        client = TopazClient(api_key=sb.api_key, base_url=sb.base_url)
        sb.inject("status", code=503, times=2)       # the next two API calls fail
        sb.inject("truncate", server="storage", after_bytes=1000)
        ...
        assert all("X-API-Key" not in r.headers for r in sb.requests
                   if r.server == "storage")

``Sandbox(link=Link(per_connection=25e6, shared=100e6, latency=0.02))``
makes the storage host as slow as real object storage (see ``_link``), for
benches and tests of parallel downloads.

Jobs are added with :meth:`Sandbox.add_job`; with ``demo=True`` two dozen
jobs derived from four bundled photos (several models, two Failed with a
reason, one still processing for 30 s) are there from the start
(:attr:`Sandbox.demo_ids`, the first of which is Completed).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._api import PREFIX, api_error, make_api_route
from ._demo import DEMO_JOBS, SHOOTOUT_MODELS, SHOOTOUT_SOURCE_ID, demo_bytes, shootout_bytes
from ._faults import SERVERS, FaultBook, make_fault
from ._http import RecordedRequest, RequestLog, SandboxServer
from ._jobs import STATUSES, ImageSource, Job, JobStore, make_object, source_name
from ._link import Link, _Shaper
from ._storage import STORAGE_PROFILES, Signer, make_storage_route, storage_error

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["STORAGE_PROFILES", "Job", "Link", "RecordedRequest", "Sandbox", "serve"]


class Sandbox:
    """A Topaz-compatible API server and its storage server, on loopback.

    ``api_key`` is the key the API accepts (a random ``sbx_…`` key when not
    given; never shown by ``repr``).  ``link_ttl`` is the lifetime in seconds
    of links issued from now on; set it low to test link expiry.  Ports 0
    pick free ports.  Use as a context manager, or call :meth:`start` and
    :meth:`stop`.

    ``storage_profile`` says how much the storage host tells about objects:
    ``"s3"`` (ETag, Last-Modified, Content-Length, ``image/*``, URLs ending in
    ``output.png``) or ``"bare"`` (none of these: chunked bodies of
    ``application/octet-stream`` under URLs ending in the UUID, which is all
    the Topaz API promises).  See :data:`STORAGE_PROFILES`.

    ``link`` makes the storage host as slow as real object storage: a
    :class:`Link` caps its bodies per connection and over all connections
    together and holds each answer for a latency (``None``: loopback speed).
    Ranges are shaped like whole objects, so parallel ranged GETs really get
    more of the shared link than one stream does.
    """

    def __init__(self, api_key: str | None = None, *, host: str = "127.0.0.1",
                 api_port: int = 0, storage_port: int = 0, demo: bool = True,
                 link_ttl: float = 3600.0, storage_profile: str = "s3",
                 link: Link | None = None) -> None:
        self.api_key: str = api_key or "sbx_" + secrets.token_urlsafe(24)
        self.host = host
        self.link_ttl = float(link_ttl)
        self.demo_ids: list[str] = []
        self._ports = (api_port, storage_port)
        self._demo = demo
        self._jobs = JobStore()
        self._log = RequestLog()
        self._faults = FaultBook()
        self._signer = Signer(secrets.token_bytes(32), storage_profile)
        self.storage_profile = storage_profile
        self.link = link
        self._servers: list[SandboxServer] = []
        self._threads: list[threading.Thread] = []
        self.base_url = ""
        self.storage_url = ""

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind both ports, seed the demo jobs and start serving; returns ``self``."""
        if self._servers:
            return self
        api = SandboxServer(
            (self.host, self._ports[0]), "api",
            make_api_route(api_key=lambda: self.api_key, jobs=self._jobs.get,
                           live_jobs=self._jobs.live, signer=self._signer,
                           link_ttl=lambda: self.link_ttl),
            api_error, self._log, self._faults)
        try:
            storage = SandboxServer(
                (self.host, self._ports[1]), "storage",
                make_storage_route(self._signer, self._jobs.get),
                storage_error, self._log, self._faults,
                _Shaper(self.link) if self.link is not None else None)
        except OSError:
            api.server_close()
            raise
        self._servers = [api, storage]
        self.base_url = f"http://{self._authority(api)}{PREFIX}"
        self.storage_url = f"http://{self._authority(storage)}"
        self._signer.base_url = self.storage_url
        if self._demo and not self.demo_ids:
            self._seed_demo()
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"sandbox-{server.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both servers, close their sockets and join their threads."""
        self._faults.clear()  # releases answers a gather or hang fault holds
        for server in self._servers:
            server.shutdown()
        for server in self._servers:
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(5)
        self._servers, self._threads = [], []

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"base_url={self.base_url!r}" if self._servers else "stopped"
        return f"<Sandbox {state} jobs={len(self._jobs.live(time.time()))}>"

    def _authority(self, server: SandboxServer) -> str:
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = host if ":" not in host else f"[{host}]"
        return f"{shown}:{port}"

    # -- jobs --------------------------------------------------------------

    def add_job(self, input: ImageSource, output: ImageSource | None = None, *,
                process_id: str | None = None, status: str = "Completed",
                ready_in: float | None = None, progress: int | None = None, age: float = 0.0,
                model: str = "Standard V2", category: str = "Enhance", model_type: str = "GAN",
                crop_to_fill: bool = False, filename: str | None = None, credits: int = 1,
                input_format: str | None = None, output_format: str | None = None,
                message: str | None = None) -> str:
        """Store a process and return its ID.

        ``input``/``output`` are PIL images (encoded as JPEG and PNG unless
        ``input_format``/``output_format`` say otherwise), file paths, or
        already-encoded bytes (stored as they are, even if corrupt).  With
        ``ready_in`` the job reports ``Processing`` with rising progress until
        that many seconds pass, then ``Completed``.  ``age`` back-dates its
        creation; past 7 days it answers 404 like an expired job.  ``message``
        is the reason a Failed or Cancelled job gives in its status.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        pid = str(uuid.UUID(process_id)) if process_id else str(uuid.uuid4())
        if output is None and (ready_in is not None or status == "Completed"):
            raise ValueError("a Completed job (or one with ready_in) needs an output image")
        if progress is not None and not 0 <= progress <= 100:
            raise ValueError(f"progress must be 0..100, not {progress!r}")
        created = time.time() - age
        ready_at = created + age + ready_in if ready_in is not None else None
        finished = ready_at if ready_at is not None else created + 5
        in_obj = make_object(input, "jpeg", input_format, created)
        out_obj = make_object(output, "png", output_format, finished) if output is not None \
            else None
        if filename is None:
            named = source_name(input)
            filename = named if named else f"image.{in_obj.extension}"
        self._jobs.put(Job(
            process_id=pid, input=in_obj, output=out_obj,
            status="Processing" if ready_in is not None else status,
            created=created, started=time.time(), ready_at=ready_at, progress=progress, model=model,
            category=category, model_type=model_type, crop_to_fill=crop_to_fill,
            filename=filename, credits=credits,
            output_format=(out_obj.format if out_obj else (output_format or "png").lower()),
            message=message,
        ))
        return pid

    def job(self, process_id: str) -> Job:
        """The stored :class:`Job` record (raises ``KeyError`` for an unknown ID)."""
        found = self._jobs.get(str(uuid.UUID(str(process_id))))
        if found is None:
            raise KeyError(f"no sandbox job {process_id!r}")
        return found

    def _seed_demo(self) -> None:
        for demo in DEMO_JOBS:
            source, enhanced = demo_bytes(demo)
            pid = self.add_job(
                source, enhanced, process_id=demo.process_id, status=demo.status,
                ready_in=demo.ready_in, age=demo.age, model=demo.model,
                category=demo.category, model_type=demo.model_type,
                filename=f"{demo.name}.jpg", credits=demo.credits,
                output_format=demo.output_format, message=demo.message)
            self._jobs.get(pid).name = demo.name  # type: ignore[union-attr]
            self.demo_ids.append(pid)

    def add_shootout(self) -> list[str]:
        """Add the model shoot-out: one photo processed by three "models" (a plain
        Lanczos upscale, a sharpened one, one with an invented patch), all with
        the same ``source_id``.  Returns their process IDs; calling it again
        returns the same ones."""
        source, outputs = shootout_bytes()
        ids = []
        for spec in SHOOTOUT_MODELS:
            pid = spec.process_id
            if self._jobs.get(pid) is None:
                self.add_job(source, outputs[spec.name], process_id=pid, model=spec.model,
                             category="Enhance", filename="coffee.png", age=600.0)
                job = self._jobs.get(pid)
                job.name = f"shootout-{spec.name}"  # type: ignore[union-attr]
                job.source_id = SHOOTOUT_SOURCE_ID  # type: ignore[union-attr]
            ids.append(pid)
        return ids

    # -- observation and faults ---------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request both servers received so far, in order (a snapshot)."""
        return self._log.snapshot()

    def clear_requests(self) -> None:
        self._log.clear()

    def inject(self, kind: str, *, server: str = "api", times: int | None = 1,
               path: str | None = None, **params: Any) -> None:
        """Make the next matching requests misbehave; see ``_faults`` for the kinds.

        ``latency`` (``seconds``), ``status`` (``code``, ``retry_after``,
        ``message``), ``truncate`` (``after_bytes``), ``drop``, ``expire``
        (storage only), ``omit_headers`` (``headers``), ``redirect``
        (``location``, ``code`` 302 by default; any text, a malformed URL too),
        ``cut_by_close`` (``after_bytes``: the answer carries no length and no
        chunks, and the connection is closed after that many bytes of body, a
        cut that looks like a clean end) and ``storage_error`` (storage only:
        ``error``, the XML ``Code`` such as ``"AccessDenied"``,
        ``"ExpiredToken"``, ``"SignatureDoesNotMatch"`` or ``"NoSuchKey"``;
        ``code``, the HTTP status, 403 by default; ``message``; ``dialect``
        ``"s3"``, ``"gcs"`` or ``"none"``, an HTML page with no code) and
        ``listing`` (``mode``: ``endless``, ``stuck_cursor``, ``bad_entry`` or ``overlap``,
        on each page of ``GET /status`` it applies to); ``gather`` (``count``,
        ``timeout``: each answer's body waits after its headers until ``count``
        matching answers are under way, else its connection is dropped),
        ``hang`` (``after_bytes``, ``timeout``: the answer stops after that many
        bytes of body and is held open until :meth:`clear_faults`),
        ``ignore_range`` (storage only: the whole object, 200, whatever the
        ``Range``) and ``change_etag`` (storage only: another ``etag``, as if the
        object had been replaced).  Any kind also takes ``range``: the exact
        ``Range`` header a request must carry to be matched.  A
        fault counts every request it answers, a HEAD too.  ``path`` is a
        substring the request path must contain; ``times=None`` lasts until
        :meth:`clear_faults`.
        """
        if server not in SERVERS:
            raise ValueError(f"server must be 'api' or 'storage', not {server!r}")
        self._faults.add(make_fault(kind, server, times, path, params))

    def clear_faults(self) -> None:
        self._faults.clear()


def serve(*, host: str = "127.0.0.1", port: int = 8765, storage_port: int = 0,
          api_key: str | None = None, demo: bool = True, storage_profile: str = "s3") -> None:
    """Run a sandbox in the foreground until Ctrl-C, printing how to point a client at it.

    This is a local development server: it prints its own API key, which is
    meant to be copied into ``TOPAZ_API_KEY``.  ``storage_profile`` is as for
    :class:`Sandbox`.
    """
    sandbox = Sandbox(api_key, host=host, api_port=port, storage_port=storage_port, demo=demo,
                      storage_profile=storage_profile)
    try:
        sandbox.start()
    except OSError as exc:  # the port is taken, or the address is not this machine's
        from ..errors import TopazError

        taken = ", ".join(str(p) for p in (port, storage_port) if p)
        raise TopazError(
            f"the sandbox could not listen on {host} port {taken or 'any'} "
            f"({exc.strerror or exc}); choose another with --port N "
            "(and --storage-port), or 0 for any free port") from None
    with sandbox as sb:
        lines = [
            "Topaz sandbox running",
            f"  API:      {sb.base_url}",
            f"  storage:  {sb.storage_url} ({sb.storage_profile} profile)",
            f"  API key:  {sb.api_key}",
        ]
        if sb.demo_ids:
            lines.append("  demo processes:")
            now = time.time()
            for pid in sb.demo_ids:
                job = sb.job(pid)
                lines.append(f"    {pid}  {job.name or job.filename:<16} {job.snapshot(now)[0]}")
        lines += [
            "Point topaz-nb at it with:",
            f"  export TOPAZ_API_URL={sb.base_url}",
            f"  export TOPAZ_API_KEY={sb.api_key}",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
