"""Errors as values: an HTTP status, an OpenAI error code and type, and whether a retry can help.

Raised anywhere on the request path; each protocol module renders them in its own error shape.
"""

from __future__ import annotations

import math


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        retryable: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.retryable = retryable
        self.headers = headers or {}


OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def type_for_status(status: int) -> str:
    """The OpenAI error `type` an HTTP status means (the SDKs' own classes map the same statuses)."""
    return OPENAI_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def invalid_api_key(
    message: str = "Invalid API key. Pass a hubproxy key as 'Authorization: Bearer sk-hp-…'.",
):
    return GatewayError(401, "invalid_api_key", message, type="authentication_error")


def insufficient_quota(message: str) -> GatewayError:
    return GatewayError(402, "insufficient_quota", message, type="insufficient_quota")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        "model_not_found",
        f"The model {model!r} does not exist or is not served here; see GET /v1/models.",
        param="model",
    )


def model_not_allowed(model: str) -> GatewayError:
    return GatewayError(
        403,
        "model_not_allowed",
        f"This API key may not use the model {model!r}.",
        type="permission_error",
        param="model",
    )


def model_not_priced(model: str) -> GatewayError:
    return GatewayError(
        403,
        "model_not_priced",
        f"The model {model!r} has no price set on this gateway yet, so it cannot be billed; the operator "
        f"can set one with `hubproxy models add {model} … --replace`.",
        type="permission_error",
        param="model",
    )


def ip_not_allowed(address: str | None) -> GatewayError:
    return GatewayError(
        403,
        "ip_not_allowed",
        f"This API key may not be used from {address or 'this address'}.",
        type="permission_error",
    )


def rate_limited(message: str, wait: float) -> GatewayError:
    """429 that tells the true wait in whole seconds (Retry-After) and milliseconds (retry-after-ms)."""
    wait = max(wait, 0.001)
    return GatewayError(
        429,
        "rate_limited",
        message,
        type="rate_limit_error",
        retryable=True,
        headers={"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))},
    )


def invalid_request(message: str, param: str | None = None, status: int = 400) -> GatewayError:
    return GatewayError(status, "invalid_request_error", message, param=param)


def upstream_unavailable(message: str, status: int = 502) -> GatewayError:
    return GatewayError(status, "upstream_unavailable", message, type="api_error", retryable=True)
