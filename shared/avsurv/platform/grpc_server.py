"""The platform's gRPC server: ``grpc.aio`` on an event loop thread of its own (issue 16 item 6). A
server-streaming call written as a coroutine (``Anomalies.Watch``) holds no thread while it waits, so
hundreds of open live feeds leave the worker threads to the unary calls; those stay plain functions, run on
a pool of :data:`WORKER_THREADS`. A request whose bytes do not decode is refused with INVALID_ARGUMENT
(gRPC's own answer is INTERNAL, with a traceback in the server's log)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from avsurv.v1 import api_pb2, api_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""gRPC message limit both ways: an uploaded query clip is a short media file."""
WORKER_THREADS = 16
"""Threads running unary calls (and the health servicer); streaming API calls run on the loop."""
API_PREFIX = "/avsurv.v1."
log = logging.getLogger("avsurv")


class _Undecodable:
    """Stands for a request whose bytes are not a valid message of its type."""

    def __init__(self, error: Exception) -> None:
        self.reason = f"the request is not a valid message of its type ({type(error).__name__})"


def _decoding(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError) as error:
            return _Undecodable(error)
    return decode


def _guarded(behaviour: Callable, streaming: bool) -> Callable:
    """``behaviour`` (a plain function, a generator, a coroutine or an async generator function) refusing an
    :class:`_Undecodable` request first; the call keeps its kind, so it runs where it ran before."""
    if inspect.isasyncgenfunction(behaviour):
        async def feed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            async for response in behaviour(request, context):
                yield response
        return feed
    if inspect.iscoroutinefunction(behaviour):
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            return await behaviour(request, context)
        return unary

    def plain(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return behaviour(request, context)
    return _on_workers(plain) if streaming else plain


def _on_workers(behaviour: Callable) -> Callable:
    """A plain streaming ``behaviour`` as a generator: the aio server calls a streaming handler on its loop
    and runs only the generator's steps on the worker threads, where a synchronous abort may block."""
    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from behaviour(request, context) or ()
    return stream


class _DecodeGuard(grpc.aio.ServerInterceptor):
    """Wraps the API's unary-request handlers (every call of api.proto) with :func:`_decoding` and
    :func:`_guarded`."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or not details.method.startswith(API_PREFIX):
            return handler
        kind = "unary_stream" if handler.response_streaming else "unary_unary"
        return handler._replace(request_deserializer=_decoding(handler.request_deserializer),
                                **{kind: _guarded(getattr(handler, kind), handler.response_streaming)})


class _SyncInterceptor(grpc.aio.ServerInterceptor):
    """Runs a synchronous ``grpc.ServerInterceptor`` (the token check) in the aio server: it decides on the
    call's details and the handler found for it."""

    def __init__(self, interceptor: grpc.ServerInterceptor) -> None:
        self.interceptor = interceptor

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        decided = self.interceptor.intercept_service(lambda _: handler, details)
        if decided is handler or decided is None or not decided.response_streaming or decided.request_streaming:
            return decided
        return decided._replace(unary_stream=_on_workers(decided.unary_stream))  # a refusal of a feed


class GrpcServer:
    """A ``grpc.aio`` server driven from synchronous code: its loop runs on a daemon thread."""

    def __init__(self, interceptors: Sequence[grpc.ServerInterceptor]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc", daemon=True)
        self._thread.start()
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        # The token check first: a call it refuses is not decoded.
        chain = [*(_SyncInterceptor(i) for i in interceptors), _DecodeGuard()]
        self.server: grpc.aio.Server = self.call(self._create, options, chain)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` on the loop's thread (where every aio object must be used), awaited if a
        coroutine function."""
        async def run() -> Any:
            result = function(*args)
            return await result if inspect.isawaitable(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    @staticmethod
    def _create(options: list[tuple[str, int]], interceptors: list[grpc.aio.ServerInterceptor]) -> grpc.aio.Server:
        return grpc.aio.server(migration_thread_pool=futures.ThreadPoolExecutor(WORKER_THREADS, "grpc-worker"),
                               options=options, interceptors=interceptors)

    def stop(self, grace: float | None) -> threading.Event:
        """Stops serving (in-flight calls get ``grace`` seconds), then the loop; returns a set event, as
        ``grpc.Server.stop`` returns one to wait on."""
        if self.loop.is_running():
            self.call(self.server.stop, grace)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        done = threading.Event()
        done.set()
        return done


def serve_grpc(port: int, servicers: dict[str, object], health_checks: dict[str, Callable[[], bool]],
               host: str = "127.0.0.1", credentials: grpc.ServerCredentials | None = None,
               interceptors: Sequence[grpc.ServerInterceptor] = ()) -> tuple[GrpcServer, int, Callable[[], None]]:
    """Starts a gRPC server with the given API servicers, health checking and reflection, over TLS when
    given ``credentials``. Returns the server, its port and a function that refreshes the health statuses
    from ``health_checks``."""
    server = GrpcServer(interceptors)
    adders = {"EventSearch": api_pb2_grpc.add_EventSearchServicer_to_server,
              "Anomalies": api_pb2_grpc.add_AnomaliesServicer_to_server,
              "Control": api_pb2_grpc.add_ControlServicer_to_server}
    health_servicer = health.HealthServicer()
    names = [api_pb2.DESCRIPTOR.services_by_name[n].full_name for n in servicers]
    address = f"{host}:{port}"

    def setup(aio: grpc.aio.Server) -> int:
        for name, servicer in servicers.items():
            adders[name](servicer, aio)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, aio)
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], aio)
        return aio.add_secure_port(address, credentials) if credentials else aio.add_insecure_port(address)

    bound = server.call(setup, server.server)
    server.call(server.server.start)

    def refresh() -> None:
        statuses = {name: check() for name, check in health_checks.items()}
        # The API's services by their full names, which standard probes ask for, as the whole server.
        statuses.update(dict.fromkeys(["", *names], all(statuses.values())))
        for name, ok in statuses.items():
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING if ok
                                else health_pb2.HealthCheckResponse.NOT_SERVING)

    refresh()
    return server, bound, refresh
