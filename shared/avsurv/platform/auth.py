"""Bearer tokens for the gRPC API, in two scopes: ``read`` (search, anomalies, listings) and ``control``
(everything, including the Control calls that change the platform). With no token configured, every call
is allowed; with any, every call but health checking needs ``authorization: Bearer TOKEN``. Tokens are
compared in constant time and never logged."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from avsurv.platform.config import ConfigError, Settings
from avsurv.platform.grpc_server import MAX_MESSAGE_BYTES

READ, CONTROL = "read", "control"
SCOPES = (READ, CONTROL)
CONTROL_SERVICE = "/avsurv.v1.Control/"
READ_ONLY_CONTROL = frozenset({"ListCameras", "GetTrainingStatus", "ListModels"})
"""Control calls that change nothing. Any other Control call, including one added later, needs control."""
OPEN_SERVICES = (f"/{health.SERVICE_NAME}/",)
"""Probes (kubelet, load balancers) send no token."""


def required_scope(method: str) -> str | None:
    """The scope a call of ``method`` (``/package.Service/Method``) needs; None: open to anyone."""
    if method.startswith(OPEN_SERVICES):
        return None
    if method.startswith(CONTROL_SERVICE) and method.removeprefix(CONTROL_SERVICE) not in READ_ONLY_CONTROL:
        return CONTROL
    return READ


def configured_tokens(settings: Settings) -> dict[str, list[str]]:
    """Scope -> its tokens, from the token settings and ``api_tokens_file``; empty when none is set."""
    tokens: dict[str, list[str]] = {READ: [settings.api_read_token.get_secret_value()],
                                    CONTROL: [settings.api_control_token.get_secret_value()]}
    if settings.api_tokens_file:
        for scope, token in _token_lines(Path(settings.api_tokens_file)):
            tokens[scope].append(token)
    return {scope: [t for t in values if t] for scope, values in tokens.items() if any(values)}


def _token_lines(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read api_tokens_file {path}: {error.strerror}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        scope, _, token = line.strip().partition(" ")
        if scope not in SCOPES or not token.strip():
            # the line number only: the line may hold a token
            raise ConfigError(f"{path}:{number}: a line is 'read TOKEN' or 'control TOKEN'")
        pairs.append((scope, token.strip()))
    return pairs


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses a call without a token (UNAUTHENTICATED) or with a read token where control is needed
    (PERMISSION_DENIED), before the servicer sees it."""

    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self.tokens = tokens

    def _scopes(self, token: str) -> set[str]:
        granted = {scope for scope, values in self.tokens.items()
                   if any(hmac.compare_digest(token.encode(), value.encode()) for value in values)}
        return set(SCOPES) if CONTROL in granted else granted

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        needed = required_scope(details.method)
        if needed is None:
            return continuation(details)
        header = dict(details.invocation_metadata or ()).get("authorization", "")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _refusal(continuation(details), grpc.StatusCode.UNAUTHENTICATED,
                            "this API needs 'authorization: Bearer TOKEN' metadata")
        scopes = self._scopes(token.strip())
        if not scopes:
            return _refusal(continuation(details), grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if needed not in scopes:
            return _refusal(continuation(details), grpc.StatusCode.PERMISSION_DENIED,
                            f"{details.method} needs a {needed} token")
        return continuation(details)


def _refusal(handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, detail: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` (unary or streaming) that aborts the call."""
    def abort(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(code, detail)

    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_stream_rpc_method_handler(abort)


def operator_channel(settings: Settings, port: int, host: str = "127.0.0.1") -> grpc.Channel:
    """A channel to this platform's own API as its operator (the demo): over TLS, trusting the configured
    certificate, when the API serves TLS; with a control token when tokens are configured, else a read one."""
    target = f"{host}:{port}"
    # The API's own limit, not gRPC's 4 MB default: an exported evidence mp4 is up to some 10 MB.
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    if settings.grpc_tls_cert:
        credentials = grpc.ssl_channel_credentials(Path(settings.grpc_tls_cert).read_bytes())
        channel = grpc.secure_channel(target, credentials, options)
    else:
        channel = grpc.insecure_channel(target, options)
    tokens = configured_tokens(settings)
    token = tokens.get(CONTROL) or tokens.get(READ)
    return grpc.intercept_channel(channel, _Bearer(token[0])) if token else channel


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer TOKEN`` to every call."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self._metadata])

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: object) -> object:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: object) -> object:
        return continuation(self._details(details), request)
