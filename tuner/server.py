"""perftune's HTTP API (``perftune serve``): a thin FastAPI layer over :mod:`perftune.service`.

The CLI and the API call the same service functions; this module only maps them to routes,
status codes and JSON. Security rules:

* writes (``POST``) need ``Authorization: Bearer TOKEN`` matching the server's token
  (``PERFTUNE_API_TOKEN``), compared with :func:`hmac.compare_digest`; a server without one
  is read-only (403), a missing or wrong token is 401. :class:`GuardWrites` decides that from
  the headers alone, before a byte of the body is read, then reads the body itself, at most
  ``max_body`` bytes (413 past that, whether the length is declared or the body is chunked);
* a 422 quotes at most a short excerpt of the input it refuses (never the body echoed back);
* a submitted sweep names a built-in workload or a ``FILE.py:FUNC`` (and optionally a space
  YAML) under an allowed directory, real paths resolved (see :func:`perftune.service.check_request`);
* every database URL shown is redacted, error messages included (:func:`perftune.storage.redact_text`);
  bad input is 422 naming the field (``loc``), unknown ids 404, cancelling a finished sweep
  409, an unreachable store 503.

Imported only by ``perftune serve`` (``import perftune`` does not import FastAPI).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from perftune import service
from perftune.backends import BACKENDS
from perftune.errors import ConflictError, NotFoundError, PerftuneError, UsageError
from perftune.objectives import OBJECTIVES, TASKS
from perftune.search_spaces import quote
from perftune.settings import Workspace
from perftune.storage import SWEEP_STATES, StoreError, redact_text
from perftune.sweep import PRUNERS, SAMPLERS

__all__ = ["GuardWrites", "create_app", "field_of"]

MAX_ID = 2**31 - 1
#: The largest request body the API reads: a submitted sweep is a few hundred bytes.
MAX_BODY = 2**20
#: Methods that write (and so need the token): all but these.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FLAG_RE = re.compile(r"^--([a-z][a-z0-9-]*)")
#: ``--flag`` of an error message -> the request field it names (where the names differ).
_FIELDS = {"budget": "budget_s"}
#: Flags of the server's configuration: an error naming one is the server's (503).
_SERVER_FLAGS = ("db", "storage", "tracking_uri", "home")


def field_of(message: str) -> str | None:
    """The request field an error message names (``"--confirm-top 0: ..."`` -> ``confirm_top``)."""
    m = _FLAG_RE.match(message)
    if m is None:
        return None
    flag = m.group(1)
    return _FIELDS.get(flag, flag.replace("-", "_"))


# --------------------------------------------------------------------------- models


class SweepIn(BaseModel):
    """A sweep to queue: the fields of ``perftune sweep`` that a remote caller may set."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(min_length=1, max_length=1024, description="A built-in workload "
                          "(mlp-digits, cnn-digits, gpt-tiny) or FILE.py:FUNC under an allowed directory")  # fmt: skip
    framework: Literal[tuple(BACKENDS)] = "torch"  # type: ignore[valid-type]
    device: str = Field("cpu", max_length=64, description="cpu, cuda, mps, xpu, npu, tpu or KIND:INDEX")
    objective: str | None = Field(None, max_length=255, pattern=r"^[a-z-]+(,[a-z-]+)*$", description=(
        f"One of {', '.join(OBJECTIVES)}; several, comma-separated (a primary first: "
        "time-to-target,energy), keep a Pareto front. Default: the task's (time-to-target; throughput-at-slo)"))
    task: Literal[tuple(TASKS)] | None = Field(None, description="training, or inference (serving "  # type: ignore[valid-type]
                                               "the trained model); default: the objective's")
    slo_p99_ms: float | None = Field(None, gt=0, le=3_600_000, description="Inference: the p99 latency "
                                     "target in ms (throughput-at-slo needs it)")
    max_quality_drop: float | None = Field(None, ge=0, le=1e15, description="Inference: the most quality "
                                           "a config may lose against the trained fp32 model (default 0.01)")
    request_rate: float | None = Field(None, gt=0, le=1e9, description="Inference, latency: requests "
                                       "per second arriving (default: back to back)")
    trials: int = Field(20, ge=1, le=100_000, description="Total trials in the study")
    timeout: float | None = Field(None, gt=0, description="Stop starting trials after this many seconds")
    space: str | None = Field(None, max_length=1024, description="Search-space YAML under an allowed directory")
    study: str | None = Field(None, max_length=255, description="Study name")
    seed: int | None = Field(None, ge=0, lt=2**32 - 10_000)
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    pruner: Literal[PRUNERS] = "median"  # type: ignore[valid-type]
    confirm_top: int = Field(2, ge=1, le=100)
    confirm_repeats: int = Field(3, ge=1, le=100)
    confirm_max_repeats: int | None = Field(None, ge=1, le=100)
    trial_timeout: float | None = Field(None, gt=0)
    budget_s: float | None = Field(None, gt=0)
    batch_probe: Literal["auto", "on", "off"] = Field("auto", description="Probe the largest "
                                                      "batch size that fits first (auto: on accelerators)")
    warm_start: Literal["auto", "off"] = Field("auto", description="A new study first tries the "
                                               "stored bests of this workload from other devices and objectives")
    patience: int | None = Field(None, ge=1, le=10_000, description="End the search once this many "
                                 "completed trials in a row improved the best by less than 1%")
    search: Literal["auto", "joint", "factored"] = Field("auto", description="factored: throughput, then "
                                                         "samples to target; joint: every knob at once")


class MlflowLink(BaseModel):
    run_id: str
    experiment_id: str | None = None
    url: str | None = None
    runs_url: str | None = None
    hint: str | None = None


class SweepOut(BaseModel):
    id: int
    state: str
    study_name: str | None = None
    workload: str | None = None
    framework: str | None = None
    device_kind: str | None = None
    device_name: str | None = None
    device_fingerprint: str | None = None
    objective: str
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    trials_total: int | None = None
    trials_done: int
    best_value: float | None = None
    best_config_id: int | None = None
    n_trials: int
    n_complete: int
    error: str | None = None
    worker: str | None = None
    cancel_requested: bool
    mlflow_run_id: str | None = None
    mlflow: MlflowLink | None = None
    request: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None


class BestConfigOut(BaseModel):
    id: int
    workload: str
    framework: str
    device_kind: str
    device_name: str
    device_fingerprint: str
    objective: str
    direction: str
    unit: str
    config: dict[str, Any]
    value: float
    spread: float | None = None
    metrics: dict[str, Any]
    baseline_config: dict[str, Any] | None = None
    baseline_value: float | None = None
    speedup: float | None = None
    #: 95% confidence intervals [low, high] of value and speedup (None: not measured in rounds).
    value_interval: list[float] | None = Field(None, min_length=2, max_length=2)
    speedup_interval: list[float] | None = Field(None, min_length=2, max_length=2)
    mlflow_run_id: str | None = None
    sweep_id: int | None = None
    study_name: str | None = None
    created_at: str
    updated_at: str
    history: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    read_only: bool
    db: str
    storage: str
    tracking_uri: str
    schema_revision: str | None = Field(None, alias="schema")
    schema_head: str
    error: str | None = None

    model_config = ConfigDict(populate_by_name=True)


class Problem(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "The body is not JSON", 401: "Missing or wrong bearer token", 403: "Read-only server (no PERFTUNE_API_TOKEN)",
            404: "No such resource", 409: "Not in a state that allows this",
            413: "The request body is larger than the server accepts (1 MiB by default)",
            503: "The perftune database cannot be reached"}  # fmt: skip
    return {c: {"model": Problem, "description": text[c]} for c in codes}


# --------------------------------------------------------------------------- writes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _ClientGone(Exception):
    """The client disconnected before its whole body arrived."""


class GuardWrites:
    """Pure ASGI middleware in front of the whole app: authorise a write from its headers, and
    cap its body, before the app (FastAPI, which reads a body in full to parse it) sees it.

    A request whose method is not in :data:`SAFE_METHODS` is answered 403 when the server has no
    token (read-only) and 401 when ``Authorization: Bearer`` is missing or wrong (constant-time
    comparison), without reading its body. An authorised one is answered 413 when it declares a
    ``Content-Length`` over ``max_body``, or as soon as the bytes streamed in (chunked encoding
    too) pass it; otherwise the app gets the body, read here, from memory. Other requests pass
    through untouched (no route reads their body).
    """

    def __init__(self, app: ASGIApp, *, token: bytes | None, max_body: int = MAX_BODY) -> None:
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.refusal(headers)
        if refusal is None and _declared_length(headers) > self.max_body:
            refusal = self.too_large()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _ClientGone:
            return  # nobody left to answer
        if body is None:
            await self.too_large()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def refusal(self, headers: Headers) -> JSONResponse | None:
        """The 403 or 401 a write with these headers gets, or ``None`` if it is authorised."""
        if self.token is None:
            return JSONResponse({"detail": "read-only: this server has no PERFTUNE_API_TOKEN, "
                                 "so it accepts no writes"}, status_code=403)  # fmt: skip
        scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
        given = credentials.encode("latin-1") if scheme.lower() == "bearer" else b""
        if not hmac.compare_digest(given, self.token):
            return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return None

    def too_large(self) -> JSONResponse:
        """The 413 for a body over the cap."""
        return JSONResponse({"detail": f"request body larger than {self.max_body} bytes"},
                            status_code=413)  # fmt: skip

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or ``None`` as soon as more than ``max_body`` bytes came in."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _declared_length(headers: Headers) -> int:
    """The ``Content-Length`` a request declares (0 when none: chunked, or not a number)."""
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()):
        return 0
    return int(length[:20])  # more digits than that is past any cap anyway


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` as the one request message, then defers to
    ``receive`` (which reports the disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _short_input(value: Any) -> Any:
    """A validation error's ``input`` as a 422 shows it: as given when short, else an excerpt
    (:func:`perftune.search_spaces.quote`), so a refused body is never echoed back whole."""
    short = len(json.dumps(jsonable_encoder(value), default=str)) <= 200
    return value if short else quote(value)


# --------------------------------------------------------------------------- the app
DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), their scripts and styles served from the
    ``fastapi-offline`` package's copies under :data:`DOCS_ASSETS` (FastAPI's custom-docs
    recipe): the pages name no other host, so they work without internet."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    def assets(request: Request) -> tuple[str, str]:  # behind a proxy's prefix too
        root = request.scope.get("root_path", "").rstrip("/")
        return root + app.openapi_url, root + DOCS_ASSETS

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> Any:
        spec, static = assets(request)
        return get_swagger_ui_html(openapi_url=spec, title=f"{app.title} API", oauth2_redirect_url=None,
                                   swagger_js_url=f"{static}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{static}/swagger-ui.css",
                                   swagger_favicon_url=f"{static}/favicon.png")  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> Any:
        spec, static = assets(request)
        return get_redoc_html(openapi_url=spec, title=f"{app.title} API", redoc_js_url=f"{static}/redoc.standalone.js",
                              redoc_favicon_url=f"{static}/favicon.png", with_google_fonts=False)  # fmt: skip



def create_app(ws: Workspace, *, token: str | None = None,
               allow_dirs: list[str] | tuple[str, ...] = (), max_body: int = MAX_BODY) -> FastAPI:  # fmt: skip
    """The API over the workspace ``ws`` (its store, Optuna storage and tracking URI).

    ``token``: the bearer token writes need (``None`` or empty: read-only). ``allow_dirs``:
    where submitted workload and space files may live (real paths are compared).
    ``max_body``: the largest request body read, in bytes (413 past it).
    """
    from perftune import __version__

    opened: list[Any] = []  # the store, opened on first use (a database down at start: 503s)
    lock = threading.Lock()

    def store() -> Any:
        with lock:
            if not opened:
                opened.append(service.open_read_only(ws))
            return opened[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        while opened:
            opened.pop().close()

    app = FastAPI(title="perftune", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Best configs, devices and the sweep queue of a perftune store.")  # fmt: skip
    _offline_docs(app)
    dirs = service.allowed_dirs(list(allow_dirs))
    token_bytes = token.encode() if token else None
    # Writes are authorised (and their bodies capped) by GuardWrites before any route runs;
    # the bearer dependency only declares the scheme in the OpenAPI schema.
    app.add_middleware(GuardWrites, token=token_bytes, max_body=max_body)
    writer = HTTPBearer(auto_error=False, description="PERFTUNE_API_TOKEN of the server")
    discovered: list[list[dict[str, Any]]] = []

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{**e, "input": _short_input(e["input"])} if "input" in e else e
                  for e in exc.errors()]  # fmt: skip
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(UsageError)
    def _bad_input(request: Request, exc: UsageError) -> JSONResponse:
        where = "body" if request.method == "POST" else "query"
        message = redact_text(exc)
        field = field_of(message)
        if field in _SERVER_FLAGS:  # the server's own configuration, not the caller's input
            return JSONResponse(status_code=503, content={"detail": message})
        loc = [where, field] if field else [where]
        return JSONResponse(status_code=422, content={"detail": [
            {"type": "value_error", "loc": loc, "msg": message}]})  # fmt: skip

    def _detail(status: int):
        return lambda request, exc: JSONResponse(status_code=status, content={"detail": redact_text(exc)})

    # Looked up by the exception's class hierarchy (a NotFoundError is a PerftuneError too).
    for error, status in ((NotFoundError, 404), (ConflictError, 409), (PerftuneError, 503),
                          (StoreError, 503)):  # fmt: skip
        app.add_exception_handler(error, _detail(status))

    @app.get("/healthz", response_model=Health, responses=_errors(503))
    def healthz() -> Any:
        """Liveness, the store's schema revision and the configured backends (redacted)."""
        out = {**service.health(ws), "read_only": token_bytes is None}
        return JSONResponse(status_code=200 if out["status"] == "ok" else 503,
                            content=Health(**out).model_dump(by_alias=True))  # fmt: skip

    @app.get("/v1/best-configs", response_model=list[BestConfigOut], responses=_errors(503))
    def best_configs(workload: str = Query(min_length=1, max_length=255),
                     framework: Literal[tuple(BACKENDS)] | None = Query(None),  # type: ignore[valid-type]
                     device: str | None = Query(None, max_length=128),
                     objective: Literal[tuple(OBJECTIVES)] | None = Query(None)) -> Any:  # type: ignore[valid-type]  # fmt: skip
        """Stored best configs of a workload, best first within each objective."""
        if not service.has_database(ws):
            return []
        found = service.best_configs(ws, workload, framework=framework, device=device,
                                     objective=objective, store=store())  # fmt: skip
        return [r.to_dict() for r in found]

    @app.get("/v1/pareto-fronts", response_model=list[dict[str, Any]], responses=_errors(503))
    def pareto_fronts(workload: str = Query(min_length=1, max_length=255),
                      framework: Literal[tuple(BACKENDS)] | None = Query(None),  # type: ignore[valid-type]
                      device: str | None = Query(None, max_length=128),
                      objective: Literal[tuple(OBJECTIVES)] | None = Query(None),  # type: ignore[valid-type]
                      pick: Literal["fastest", "efficient", "smallest", "balanced"] | None = Query(None),
                      weights: str | None = Query(None, max_length=512, description="OBJECTIVE=WEIGHT,... "
                                                  "e.g. time=1,energy=0.5")) -> Any:  # fmt: skip
        """Stored Pareto fronts of a workload (multi-objective sweeps), each with the point
        ``pick`` or ``weights`` chooses (balanced when neither is given)."""
        if not service.has_database(ws):
            return []
        return service.pareto_fronts(ws, workload, framework=framework, device=device, objective=objective,
                                     pick=pick, weights=weights, store=store())  # fmt: skip

    @app.get("/v1/best-configs/{best_id}", response_model=BestConfigOut, responses=_errors(404, 503))
    def best_config(best_id: int = Path(ge=1, le=MAX_ID)) -> Any:
        """One stored best config, with its history."""
        return service.best_config_by_id(ws, best_id, store=store()).to_dict()

    @app.get("/v1/devices", response_model=list[dict[str, Any]], responses=_errors(503))
    def devices(discover: bool = Query(False, description="Discover this server's devices "
                                       "(starts each framework's worker once) instead of "
                                       "listing those the store has seen")) -> Any:  # fmt: skip
        """Devices the store has seen (sweeps ran on them), or those found on this server."""
        if not discover:
            return service.known_devices(ws, store=store())
        if not discovered:
            discovered.append(service.list_devices())
        return discovered[0]

    @app.get("/v1/sweeps", response_model=list[SweepOut], responses=_errors(503))
    def sweeps(state: Literal[SWEEP_STATES] | None = Query(None),  # type: ignore[valid-type]
               limit: int = Query(100, ge=1, le=service.MAX_LIST_LIMIT)) -> Any:  # fmt: skip
        """Sweeps, newest first (queued, running and finished ones)."""
        return service.list_sweeps(ws, state=state, limit=limit, store=store())

    @app.get("/v1/sweeps/{sweep_id}", response_model=SweepOut, responses=_errors(404, 503))
    def sweep(sweep_id: int = Path(ge=1, le=MAX_ID)) -> Any:
        """State, trials done of the total, best value so far, the stored best config id when
        done, timestamps, error and the MLflow run link."""
        return service.get_sweep(ws, sweep_id, store=store())

    @app.post("/v1/sweeps", status_code=201, response_model=SweepOut,
              responses=_errors(400, 401, 403, 413, 503), dependencies=[Depends(writer)])  # fmt: skip
    def submit(body: SweepIn) -> Any:
        """Queue a sweep for ``perftune worker --queue``."""
        return service.submit_sweep(ws, body.model_dump(), allow_dirs=dirs, store=store())

    @app.post("/v1/sweeps/{sweep_id}/cancel", response_model=SweepOut,
              responses=_errors(401, 403, 404, 409, 413, 503), dependencies=[Depends(writer)])  # fmt: skip
    def cancel(sweep_id: int = Path(ge=1, le=MAX_ID)) -> Any:
        """Cancel a queued sweep at once, or ask a running one to stop between trials."""
        return service.cancel_sweep(ws, sweep_id, store=store())

    return app
