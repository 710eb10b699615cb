"""Dashboard: a web page served by a thin gateway that is itself a client of the public gRPC API
(protos/avsurv/v1/api.proto). It reads no store: every figure on the page comes from ``EventSearch``
(``Search``; ``GetClip`` for the pictures, served as JPEG at ``/api/clip.jpg``), ``Anomalies`` (``List``, the
server-streaming ``Watch``, relayed as Server-Sent Events, ``Export``, an event's seconds with their sound
served as mp4 at ``/api/events/<event_id>/evidence.mp4``, the path of its ``evidence_uri``, and ``Scores``, a
camera's per-clip scores for the timeline at ``/api/scores``) and ``Control``,
called with the dashboard user's own bearer token, so a read token sees and only a control token changes.

Why these parts: the gateway is the standard library's ``ThreadingHTTPServer`` (a thread per request, the
live feed included; operators' dashboards number in the tens) plus ``google.protobuf.json_format``, so it
adds no dependency; the page is plain ES modules with no build step (``static/``).

Cross-site protection: a request whose ``Host`` is not an IP address, a loopback name or one of the configured
``dashboard_hosts`` is refused (421), which defeats DNS rebinding (a hostile page's name re-pointed at this
server still sends its own name as ``Host``); a POST whose ``Origin`` is not this host, or that the browser
marks cross-site or same-site (another port of localhost is same-site), is refused (403), and so is such a
request for an event's evidence (a foreign page's ``<video src>`` would make the API encode it at will)."""

from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import queue
import re
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avsurv.v1 import api_pb2, api_pb2_grpc

STATIC = Path(__file__).with_name("static")
CALL_TIMEOUT_S = 15.0
"""Longest wait for one unary API call (a search embeds nothing for a clip id: well under this)."""
EXPORT_TIMEOUT_S = 60.0
"""Longest wait for an event's evidence (the API encodes up to 600 s of clips: a few seconds)."""
KEEPALIVE_S = 10.0
"""A quiet live feed sends a comment this often: the write finds a closed browser tab, whose Watch call
the gateway then cancels."""
READY_TIMEOUT_S = 2.0
"""Longest wait for the API's health answer on /readyz (the kubelet's probe times out after 5 s)."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""Largest API answer taken: the API's own limit (an evidence mp4 of 600 s is some 10 MB; gRPC's default, 4)."""
JPEG, MP4 = "image/jpeg", "video/mp4"
EVIDENCE_PATH = re.compile(r"/api/events/([^/]+)/evidence\.mp4")
UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
LIST_LIMIT = 200
"""Events the live page loads before the feed takes over."""
TIME_RANGE = ("start_time", "end_time")
"""The query parameters, and request fields, that bound a list of events or scores in capture time."""
MODES = {"av": api_pb2.SEARCH_MODE_AUDIO_VISUAL, "audio": api_pb2.SEARCH_MODE_AUDIO,
         "visual": api_pb2.SEARCH_MODE_VISUAL}
HTTP_STATUS = {grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
               grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
               grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
               grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
               grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.CONFLICT,
               grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
               grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Host names always served (IP addresses are too: a rebinding attack needs a name)."""
SAME_ORIGIN_FETCHES = frozenset({"same-origin", "none"})
"""Sec-Fetch-Site values of a POST the gateway accepts (none: typed by the user, not sent by a page)."""
log = logging.getLogger("avsurv.dashboard")


class RequestError(Exception):
    """A request the gateway refuses before calling the API (HTTP 400)."""


@dataclass(frozen=True)
class File:
    """An answer that is not JSON: a picture or a video, and the name to save it under, if any."""
    body: bytes
    content_type: str
    filename: str = ""


def as_json(message: Message) -> dict[str, Any]:
    """A message as the page reads it: proto field names, every field (bytes as base64), so fields added to
    the API later reach the page without a change here."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def api_channel(target: str, tls_cert: str = "") -> grpc.Channel:
    """A channel to the API, over TLS trusting ``tls_cert`` when given. It carries no token of its own:
    each call carries its user's. It takes answers as large as the API sends (an evidence mp4 is megabytes)."""
    options = [("grpc.max_receive_message_length", MAX_ANSWER_BYTES)]
    if tls_cert:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(Path(tls_cert).read_bytes()), options)
    return grpc.insecure_channel(target, options)


def _number(query: dict[str, str], name: str, kind: type = float) -> Any:
    try:
        return kind(query[name])
    except ValueError:
        raise RequestError(f"{name} must be a number, got {query[name]!r}") from None


def _copy_numbers(query: dict[str, str], request: Message, names: tuple[str, ...]) -> None:
    """Sets each of the request's fields ``names`` that the query gives; the others keep the API's default."""
    for name in names:
        if name in query:
            setattr(request, name, _number(query, name))


def host_name(host_header: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:8080`` -> ``::1``), lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_host(host_header: str, hosts: Collection[str]) -> bool:
    """An IP address, a loopback name or a configured name (``.example.com``: it and its subdomains)."""
    name = host_name(host_header).rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name in LOOPBACK_HOSTS or any(name == h or (h.startswith(".") and f".{name}".endswith(h)) for h in hosts)


def cross_site(origin: str | None, fetch_site: str | None, host_header: str) -> str:
    """Why a POST comes from another site ('' when it does not): an ``Origin`` that is not this host, or
    ``Sec-Fetch-Site`` saying so. A request with neither header is not a browser's (curl, scripts)."""
    if fetch_site is not None and fetch_site.lower() not in SAME_ORIGIN_FETCHES:
        return f"a {fetch_site} request"
    if origin is not None and urlsplit(origin).netloc.lower() != host_header.strip().lower():
        return f"origin {origin} is not this host"
    return ""


class Gateway:
    """The API calls behind the page's JSON endpoints; ``metadata`` is the user's token, if any."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.health = health_pb2_grpc.HealthStub(channel)
        self.search = api_pb2_grpc.EventSearchStub(channel)
        self.anomalies = api_pb2_grpc.AnomaliesStub(channel)
        self.control = api_pb2_grpc.ControlStub(channel)

    def get(self, path: str, query: dict[str, str], metadata: list[tuple[str, str]]) -> Message:
        calls: dict[str, Callable[[], Message]] = {
            "/api/events": lambda: self.anomalies.List(self._list_request(query), timeout=CALL_TIMEOUT_S,
                                                       metadata=metadata),
            "/api/search": lambda: self.search.Search(self._search_request(query), timeout=CALL_TIMEOUT_S,
                                                      metadata=metadata),
            "/api/cameras": lambda: self.control.ListCameras(api_pb2.ListCamerasRequest(), timeout=CALL_TIMEOUT_S,
                                                             metadata=metadata),
            "/api/models": lambda: self.control.ListModels(api_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT_S,
                                                           metadata=metadata),
            "/api/training": lambda: self.control.GetTrainingStatus(api_pb2.TrainingStatusRequest(),
                                                                    timeout=CALL_TIMEOUT_S, metadata=metadata),
            "/api/scores": lambda: self.anomalies.Scores(self._scores_request(query), timeout=CALL_TIMEOUT_S,
                                                         metadata=metadata),
        }
        if path not in calls:
            raise KeyError(path)
        return calls[path]()

    def post(self, path: str, body: dict[str, Any], metadata: list[tuple[str, str]]) -> Message:
        """The Control calls that change the platform: the API refuses them without a control token."""
        calls: dict[str, Callable[[], Message]] = {
            "/api/training": lambda: self.control.TriggerTraining(
                api_pb2.TriggerTrainingRequest(epochs=int(body.get("epochs", 0))), timeout=CALL_TIMEOUT_S,
                metadata=metadata),
            "/api/training/cancel": lambda: self.control.CancelTraining(
                api_pb2.CancelTrainingRequest(), timeout=CALL_TIMEOUT_S, metadata=metadata),
            "/api/models/activate": lambda: self.control.ActivateModel(
                api_pb2.ActivateModelRequest(model_version=str(body.get("model_version", ""))),
                timeout=CALL_TIMEOUT_S, metadata=metadata),
            "/api/models/rollback": lambda: self.control.RollbackModel(
                api_pb2.RollbackModelRequest(), timeout=CALL_TIMEOUT_S, metadata=metadata),
        }
        if path not in calls:
            raise KeyError(path)
        return calls[path]()

    @staticmethod
    def _list_request(query: dict[str, str]) -> api_pb2.ListAnomaliesRequest:
        request = api_pb2.ListAnomaliesRequest(limit=_number(query, "limit", int) if "limit" in query else LIST_LIMIT)
        if query.get("camera"):
            request.camera_ids.append(query["camera"])
        _copy_numbers(query, request, TIME_RANGE)
        return request

    @staticmethod
    def _scores_request(query: dict[str, str]) -> api_pb2.ScoresRequest:
        """The API checks the values (a missing or bad camera, times, limit: 400 from its INVALID_ARGUMENT)."""
        request = api_pb2.ScoresRequest(camera_id=query.get("camera", ""),
                                        limit=_number(query, "limit", int) if "limit" in query else 0)
        _copy_numbers(query, request, TIME_RANGE)
        return request

    @staticmethod
    def _search_request(query: dict[str, str]) -> api_pb2.SearchRequest:
        mode = query.get("mode", "av")
        if mode not in MODES:
            raise RequestError(f"mode is one of {', '.join(MODES)}, got {mode!r}")
        request = api_pb2.SearchRequest(mode=MODES[mode], top_k=_number(query, "top_k", int) if "top_k" in query
                                        else 0)
        if query.get("clip_id"):
            request.clip_id = query["clip_id"]
        elif query.get("camera") and "time" in query:
            request.clip_at.camera_id, request.clip_at.capture_time = query["camera"], _number(query, "time")
        else:
            raise RequestError("a search needs clip_id, or camera and time")
        _copy_numbers(query, request, ("exclusion_s", "separation_s"))
        return request

    def clip_jpeg(self, query: dict[str, str], metadata: list[tuple[str, str]]) -> File:
        """One stored picture of a clip (``EventSearch.GetClip``): its thumbnail, or frame ``frame``."""
        if not query.get("clip_id"):
            raise RequestError("a clip picture needs clip_id")
        media = self.search.GetClip(api_pb2.GetClipRequest(clip_id=query["clip_id"]), timeout=CALL_TIMEOUT_S,
                                    metadata=metadata)
        if "frame" not in query:
            return File(media.thumbnail_jpeg, JPEG)
        index = _number(query, "frame", int)
        if not 0 <= index < len(media.frames_jpeg):
            raise RequestError(f"frame is in [0, {len(media.frames_jpeg)}), got {index}")
        return File(media.frames_jpeg[index], JPEG)

    def evidence(self, event_id: str, query: dict[str, str], metadata: list[tuple[str, str]]) -> File:
        """An event's seconds with their sound (``Anomalies.Export``), ``margin_s`` either side (the API's
        default when omitted), as an mp4 named after its camera and event."""
        request = api_pb2.ExportEvidenceRequest(event_id=event_id)
        if "margin_s" in query:
            request.margin_s = _number(query, "margin_s")
        answer = self.anomalies.Export(request, timeout=EXPORT_TIMEOUT_S, metadata=metadata)
        return File(answer.mp4, MP4, UNSAFE_FILENAME.sub("_", f"evidence-{answer.camera_id}-{answer.event_id}.mp4"))

    def api_ready(self) -> bool:
        """The API answers its health check with SERVING (the check needs no token)."""
        try:
            answer = self.health.Check(health_pb2.HealthCheckRequest(), timeout=READY_TIMEOUT_S)
        except grpc.RpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def watch(self, metadata: list[tuple[str, str]], camera: str = "") -> grpc.Call:
        """The API's live feed (an iterator of events that is also the call, to cancel it)."""
        request = api_pb2.WatchAnomaliesRequest(camera_ids=[camera] if camera else [])
        return self.anomalies.Watch(request, metadata=metadata)


class Handler(BaseHTTPRequestHandler):
    gateway: Gateway  # these two: set on the server's subclass (see serve)
    hosts: frozenset[str]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _metadata(self) -> list[tuple[str, str]]:
        """The user's ``Authorization`` header, passed to the API as is (never logged)."""
        header = self.headers.get("Authorization", "")
        return [("authorization", header)] if header else []

    def _send(self, status: int, body: bytes, content_type: str, filename: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if filename:  # only [A-Za-z0-9._-]: nothing to quote
            self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: dict[str, Any]) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _api(self, call: Callable[[], Message | File]) -> None:
        """Answers with the call's message as JSON (or its file as is), or the API's refusal."""
        try:
            answer = call()
            if isinstance(answer, File):
                self._send(HTTPStatus.OK, answer.body, answer.content_type, answer.filename)
            else:
                self._json(HTTPStatus.OK, as_json(answer))
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
        except (RequestError, ValueError, TypeError) as error:  # the latter two: a body's field of a wrong type
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except grpc.RpcError as error:
            self._json(HTTP_STATUS.get(error.code(), HTTPStatus.BAD_GATEWAY),
                       {"error": error.details(), "code": error.code().name})

    def _foreign_host(self) -> bool:
        """Answers 421 to a request for a host this gateway does not serve (DNS rebinding)."""
        host = self.headers.get("Host", "")
        if allowed_host(host, self.hosts):
            return False
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": f"host {host!r} is not served here (dashboard_hosts)"})
        return True

    def _cross_site(self) -> bool:
        """Answers 403 to a request another site's page sent."""
        refused = cross_site(self.headers.get("Origin"), self.headers.get("Sec-Fetch-Site"),
                             self.headers.get("Host", ""))
        if refused:
            self._json(HTTPStatus.FORBIDDEN, {"error": f"cross-site request refused: {refused}"})
        return bool(refused)

    def do_GET(self) -> None:
        if self._foreign_host():
            return
        url = urlsplit(self.path)
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        if url.path == "/healthz":
            self._json(HTTPStatus.OK, {"status": "serving"})
        elif url.path == "/readyz":
            ready = self.gateway.api_ready()
            self._json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, {"api_serving": ready})
        elif url.path == "/api/watch":
            self._watch(query.get("camera", ""))
        elif url.path == "/api/clip.jpg":
            self._api(lambda: self.gateway.clip_jpeg(query, self._metadata()))
        elif evidence := EVIDENCE_PATH.fullmatch(url.path):
            if not self._cross_site():
                self._api(lambda: self.gateway.evidence(unquote(evidence[1]), query, self._metadata()))
        elif url.path.startswith("/api/"):
            self._api(lambda: self.gateway.get(url.path, query, self._metadata()))
        else:
            self._static(url.path)

    def do_POST(self) -> None:
        if self._foreign_host() or self._cross_site():
            return
        # JSON only: a cross-site form cannot send it without the browser asking first (CORS preflight).
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send application/json"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except (ValueError, json.JSONDecodeError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the body is not JSON"})
            return
        self._api(lambda: self.gateway.post(urlsplit(self.path).path, body, self._metadata()))

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("", "/") else path.removeprefix("/static/")
        file = (STATIC / name).resolve()
        if not path.startswith(("/static/", "/")) or file.parent != STATIC.resolve() or not file.is_file():
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})
            return
        kind = "text/javascript" if file.suffix == ".js" else mimetypes.guess_type(file.name)[0] or "text/plain"
        self._send(HTTPStatus.OK, file.read_bytes(), f"{kind}; charset=utf-8")

    def _watch(self, camera: str) -> None:
        """Relays ``Anomalies.Watch`` as Server-Sent Events until the browser goes or the API ends it."""
        call = self.gateway.watch(self._metadata(), camera)
        events: queue.Queue[Message | grpc.RpcError | None] = queue.Queue()
        threading.Thread(target=_drain, args=(call, events), name="dashboard-watch", daemon=True).start()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self._relay(events)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the tab was closed
        finally:
            call.cancel()

    def _relay(self, events: queue.Queue) -> None:
        self.wfile.write(b": feed open\n\n")
        self.wfile.flush()
        while True:
            try:
                item = events.get(timeout=KEEPALIVE_S)
            except queue.Empty:
                self.wfile.write(b": keepalive\n\n")
            else:
                if item is None:
                    return
                if isinstance(item, grpc.RpcError):
                    error = {"error": item.details(), "code": item.code().name}
                    self.wfile.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
                    self.wfile.flush()
                    return
                self.wfile.write(f"event: anomaly\ndata: {json.dumps(as_json(item))}\n\n".encode())
            self.wfile.flush()


def _drain(call: grpc.Call, events: queue.Queue) -> None:
    """Moves the Watch stream's events into ``events`` (the handler thread writes them); None at its end."""
    try:
        for event in call:
            events.put(event)
        events.put(None)
    except grpc.RpcError as error:
        events.put(None if error.code() == grpc.StatusCode.CANCELLED else error)


@dataclass
class Dashboard:
    server: ThreadingHTTPServer
    channel: grpc.Channel
    url: str

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.channel.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a live feed's thread must not hold the process at exit


def serve(api_target: str, host: str, port: int, tls_cert: str = "", hosts: Collection[str] = ()) -> Dashboard:
    """Starts the gateway on ``host:port`` (0: any free port) for the API at ``api_target``, in a daemon
    thread; ``hosts``: the names it answers to besides loopback and IP addresses (``dashboard_hosts``).
    Raises OSError when the port cannot be bound."""
    channel = api_channel(api_target, tls_cert)
    names = frozenset(h.strip().lower().rstrip(".") for h in hosts if h.strip())
    handler = type("BoundHandler", (Handler,), {"gateway": Gateway(channel), "hosts": names})
    address = host.strip("[]")
    server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in address else _Server
    server = server_class((address, port), handler)
    threading.Thread(target=server.serve_forever, name="dashboard", daemon=True).start()
    shown = f"[{address}]" if ":" in address else address
    return Dashboard(server, channel, f"http://{shown}:{server.server_address[1]}/")


def serve_embedded(grpc_host: str, grpc_port: int, port: int, tls_cert: str = "",
                   hosts: Collection[str] = ()) -> Dashboard:
    """The dashboard of one process's platform (``avsurv run``, the demo): on the API's bind address, calling
    the API on this machine (as the demo does: TLS trusting the configured certificate)."""
    return serve(f"127.0.0.1:{grpc_port}", grpc_host, port, tls_cert, hosts)
