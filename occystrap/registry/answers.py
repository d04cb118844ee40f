"""What a registry's answer means when it is not the one asked for: the error to raise, with
the registry's own code and message from its JSON error body (distribution-spec "Error
Codes": `{"errors": [{"code": …, "message": …, "detail": …}]}`), read within a cap."""

from __future__ import annotations

import json
from typing import NoReturn

from occystrap.errors import AuthError, DigestError, NotFoundError, RegistryError
from occystrap.registry.transport import Response
from occystrap.registry.urls import redact

MAX_ERROR_BODY = 64 * 2**10


def error_body(response: Response) -> bytes:
    """An error answer's body for its detail, or nothing when it cannot be had (broken off,
    or encoded: an error page is not worth decoding without bound)."""
    try:
        return response.read(MAX_ERROR_BODY)
    except RegistryError:  # TransientError included
        return b""


def _first_error(body: bytes) -> dict[str, object] | None:
    try:
        first = json.loads(body[:MAX_ERROR_BODY])["errors"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return first if isinstance(first, dict) else None


def error_code(body: bytes) -> str:
    """The registry's error code (`MANIFEST_UNKNOWN`, `DIGEST_INVALID`…), or ""."""
    first = _first_error(body)
    code = first.get("code") if first is not None else None
    return code if isinstance(code, str) else ""


def error_detail(body: bytes) -> str:
    """The registry's own error code and message, short, as " (CODE message)"; or ""."""
    first = _first_error(body)
    if first is None:
        return ""
    text = f"{first.get('code', '')} {first.get('message', '')}".strip()
    text = " ".join(text.split())
    return f" ({text[:200]})" if text else ""


def check_status(
    response: Response,
    method: str,
    url: str,
    host: str,
    not_found: str,
    ok: tuple[int, ...] = (200,),
) -> None:
    """Return when the status is in `ok`; otherwise close the response and raise:
    NotFoundError(`not_found`) for 404, AuthError for 401/403, RegistryError else."""
    status = response.status
    if status in ok:
        return
    if status == 404:
        response.close()
        raise NotFoundError(not_found, host=host, status=404)
    body = error_body(response) if method != "HEAD" else b""
    response.close()
    detail, code = error_detail(body), error_code(body) or None
    if status in (401, 403):
        raise AuthError(
            f"authentication to {host} failed: {method} {redact(url)}: "
            f"{status} {response.reason}{detail}",
            host=host,
            status=status,
            code=code,
        )
    raise RegistryError(
        f"{method} {redact(url)}: unexpected {status} {response.reason}{detail}",
        host=host,
        status=status,
        code=code,
    )


def refuse(response: Response, method: str, url: str, host: str, what: str) -> NoReturn:
    """Turn a final refusal of a push (POST, PATCH, PUT) into the error that says what and
    why: DigestError when the registry says DIGEST_INVALID, AuthError for 401/403,
    RegistryError else."""
    body = error_body(response) if method != "HEAD" else b""
    response.close()
    detail, code = error_detail(body), error_code(body) or None
    status = f"{response.status} {response.reason}"
    if code == "DIGEST_INVALID":
        raise DigestError(
            f"{what}: the registry refused the digest: {status}{detail}",
            host=host,
            status=response.status,
            code=code,
        )
    if response.status in (401, 403):
        raise AuthError(
            f"authentication to {host} failed: {what}: {method} {redact(url)}: {status}{detail}",
            host=host,
            status=response.status,
            code=code,
        )
    raise RegistryError(
        f"{what}: {method} {redact(url)} answered {status}{detail}",
        host=host,
        status=response.status,
        code=code,
    )
