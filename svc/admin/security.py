"""Who may call the admin API: TLS for the channel, a bearer token and/or a client
certificate (mTLS) for the caller.

- A token (TRIGGERS_ADMIN_TOKEN): every call but a health check must carry
  `authorization: Bearer <token>`; one that does not is answered UNAUTHENTICATED before the
  servicer sees it. Health checks stay open: probes carry no credentials.
- A client CA (TRIGGERS_ADMIN_TLS_CLIENT_CA_FILE): the TLS handshake requires a client
  certificate it signed, so a client without one never gets a channel (gRPC Python can
  only require client certificates, not merely ask for them). Probes then use the
  plaintext health-only port (TRIGGERS_HEALTH_ADDRESS).
- Both: both are required.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from svc.config import Settings

# Health checks stay open: load balancers and orchestrator probes send no credentials.
HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
AUTHORIZATION = "authorization"
BEARER = "bearer "
# Present in a call's auth context only when the client presented a certificate that the
# server verified against the client CA.
PEER_CERTIFICATE = "x509_pem_cert"


class AdminSecurityError(ValueError):
    """The admin API's TLS or authentication settings cannot be used as given."""


@dataclass(frozen=True)
class AdminSecurity:
    """The admin API's security, built once from the settings."""

    cert_chain: bytes | None = None
    private_key: bytes | None = None
    client_ca: bytes | None = None  # set: a client certificate it signed is required
    token: str | None = None  # set: `authorization: Bearer <token>` is required

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminSecurity:
        s = settings
        if bool(s.admin_tls_cert_file) != bool(s.admin_tls_key_file):
            raise AdminSecurityError(
                "TRIGGERS_ADMIN_TLS_CERT_FILE and TRIGGERS_ADMIN_TLS_KEY_FILE go together: "
                "set both to serve the admin API over TLS, or neither"
            )
        if s.admin_tls_client_ca_file and not s.admin_tls_cert_file:
            raise AdminSecurityError(
                "TRIGGERS_ADMIN_TLS_CLIENT_CA_FILE (client certificates) needs TLS: set "
                "TRIGGERS_ADMIN_TLS_CERT_FILE and TRIGGERS_ADMIN_TLS_KEY_FILE too"
            )
        return cls(
            cert_chain=_read("TRIGGERS_ADMIN_TLS_CERT_FILE", s.admin_tls_cert_file),
            private_key=_read("TRIGGERS_ADMIN_TLS_KEY_FILE", s.admin_tls_key_file),
            client_ca=_read("TRIGGERS_ADMIN_TLS_CLIENT_CA_FILE", s.admin_tls_client_ca_file),
            token=s.admin_token or None,
        )

    @property
    def tls(self) -> bool:
        return self.cert_chain is not None

    @property
    def requires_authentication(self) -> bool:
        return self.token is not None or self.client_ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        assert self.cert_chain is not None and self.private_key is not None
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def authenticated(self, metadata: Iterable[Any], auth_context: dict[str, Any]) -> bool:
        """Does a call bring what is required: the token, and a verified certificate?"""
        if self.client_ca is not None and not auth_context.get(PEER_CERTIFICATE):
            return False  # the handshake requires one; this is a second line only
        return self.token is None or self._carries_token(metadata)

    def _carries_token(self, metadata: Iterable[Any]) -> bool:
        assert self.token is not None
        for item in metadata or ():
            key, value = (item.key, item.value) if hasattr(item, "key") else item
            if key.lower() != AUTHORIZATION or not isinstance(value, str):
                continue
            if value[: len(BEARER)].lower() == BEARER and hmac.compare_digest(
                value[len(BEARER) :].encode(), self.token.encode()
            ):
                return True
        return False


def _read(setting: str, path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AdminSecurityError(f"{setting}: cannot read {path}: {exc.strerror}") from exc


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED to any call but a health check that does not bring what is
    required (the token, a verified client certificate)."""

    def __init__(self, security: AdminSecurity):
        self.security = security

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_METHOD_PREFIX):
            return handler
        # the check runs inside the handler: only the call's context has the peer's
        # certificate, which the details given here lack
        changes = {
            kind: self._guard(behaviour)
            for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            if (behaviour := getattr(handler, kind)) is not None
        }
        return handler._replace(**changes)  # type: ignore[attr-defined]

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if not self.security.authenticated(
            context.invocation_metadata(), context.auth_context()
        ):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the admin API needs `authorization: Bearer <token>` metadata "
                "(TRIGGERS_ADMIN_TOKEN) on every call but health checks",
            )

    def _guard(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        check = self._check
        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                async for response in behaviour(request, context):
                    yield response

            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

        return unary


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):
    """The client side: adds `authorization: Bearer <token>` to every unary call."""

    def __init__(self, token: str):
        self._header = (AUTHORIZATION, f"Bearer {token}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), self._header)
        details = client_call_details._replace(metadata=metadata)  # type: ignore[attr-defined]
        return await continuation(details, request)


def client_channel(settings: Settings, address: str | None = None) -> grpc.aio.Channel:
    """A channel to the admin API as the settings describe it: TLS when
    TRIGGERS_ADMIN_TLS_CERT_FILE is set (trusting that certificate, or the CA at the end of
    its chain), and the token of TRIGGERS_ADMIN_TOKEN on every call."""
    address = address or settings.grpc_address
    interceptors = [BearerToken(settings.admin_token)] if settings.admin_token else None
    if not settings.admin_tls_cert_file:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    trusted = _read("TRIGGERS_ADMIN_TLS_CERT_FILE", settings.admin_tls_cert_file)
    credentials = grpc.ssl_channel_credentials(root_certificates=trusted)
    return grpc.aio.secure_channel(address, credentials, interceptors=interceptors)
