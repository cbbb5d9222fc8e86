"""Error classes that carry their status and stable code, and the handlers that render the envelope.

Envelope: {"success": false, "message": str, "code": str, "details": any}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.context import request_id_var

log = logging.getLogger("common.errors")


class AppError(Exception):
    status_code = 400
    code = "BAD_REQUEST"
    message = "Bad request"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
        commit: bool = False,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers
        # The refusal itself must be remembered (a spent OTP attempt, a revoked token family):
        # the request session commits before the error is returned, instead of rolling back.
        self.commit = commit
        super().__init__(self.message)


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status_code, code, message = 401, "UNAUTHORIZED", "Authentication required"


class Forbidden(AppError):
    status_code, code, message = 403, "FORBIDDEN", "Not allowed"


class NotFound(AppError):
    status_code, code, message = 404, "NOT_FOUND", "Not found"


class Conflict(AppError):
    status_code, code, message = 409, "CONFLICT", "Conflict"


class Unprocessable(AppError):
    status_code, code, message = 422, "VALIDATION_ERROR", "Invalid input"


class PaymentRequired(AppError):
    status_code, code, message = 402, "INSUFFICIENT_CREDITS", "Not enough credits"


class RateLimited(AppError):
    status_code, code, message = 429, "RATE_LIMITED", "Too many requests"


class PayloadTooLarge(AppError):
    status_code, code, message = 413, "PAYLOAD_TOO_LARGE", "Request body too large"


class ServiceUnavailable(AppError):
    status_code, code, message = 503, "UNAVAILABLE", "Service unavailable"


def error_body(message: str, code: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "message": message, "code": code, "details": details}
    rid = request_id_var.get()
    if rid:
        body["requestId"] = rid
    return body


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, expected or not, in the documented envelope."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.code, exc.details),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return JSONResponse(
            error_body("Invalid input", "VALIDATION_ERROR", details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse(
            error_body(str(exc.detail), code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("Internal server error", "INTERNAL_ERROR"), status_code=500)
