"""A stand-in for a registry's token server, on 127.0.0.1, for the real distribution registry.

distribution verifies tokens but does not issue them: the issuing side is a separate server
(docker_auth, Harbor's core, Docker Hub's auth.docker.io) that Debian does not package. This
stand-in follows the published specs that such servers implement:

- distribution's "Token Authentication Specification" (docs/spec/auth/token.md): `GET
  /token?service=&scope=…` (scopes repeated), Basic credentials or none, answering
  `{"token", "access_token", "expires_in", "issued_at"}`;
- its "OAuth2 Token Authentication" (docs/spec/auth/oauth.md): `POST /token` with a form of
  `grant_type=password` (username, password) or `grant_type=refresh_token` (an identity
  token, what `docker login` stores as `identitytoken` and a credential helper returns with
  the username `<token>`), answering `{"access_token", "expires_in", "scope"}`;
- the JWT format of "Token Authentication Implementation" (docs/spec/auth/jwt.md): ES256,
  the signing certificate in the `x5c` header, claims `iss`, `sub`, `aud` (the service),
  `exp`, `nbf`, `iat`, `jti` and `access` (type, name, actions).

The registry checks every token against `rootcertbundle` (the certificate made here), so a
token this server did not sign, or one for another service, is refused by the real thing.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "occystrap-test-registry"
ISSUER = "occystrap-test-token-server"
LIFETIME = 300


class TokenServer:
    """Issues tokens for `users` (name → password) and `refresh_tokens` (identity token →
    name). `grants` records the grant of every token request (`basic`, `anonymous`,
    `password`, `refresh_token`) for tests to check which flow a client used."""

    def __init__(
        self, directory: Path, users: dict[str, str], refresh_tokens: dict[str, str]
    ) -> None:
        self.users = dict(users)
        self.refresh_tokens = dict(refresh_tokens)
        self.grants: list[str] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / "token-signer.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                subject = server._basic_user(self.headers.get("Authorization"))
                if subject is False:
                    self._answer(401, {"details": "incorrect username or password"})
                    return
                server.grants.append("basic" if subject else "anonymous")
                scopes = query.get("scope", [])
                token = server.mint(subject or "", scopes, query.get("service", [""])[0])
                self._answer(
                    200,
                    {
                        "token": token,
                        "access_token": token,
                        "expires_in": LIFETIME,
                        "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
                    },
                )

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                grant = form.get("grant_type", "")
                subject: str | None = None
                if grant == "password":
                    user = form.get("username", "")
                    if server.users.get(user) == form.get("password"):
                        subject = user
                elif grant == "refresh_token":
                    subject = server.refresh_tokens.get(form.get("refresh_token", ""))
                if subject is None:
                    self._answer(400, {"error": "invalid_grant"})
                    return
                server.grants.append(grant)
                scopes = form.get("scope", "").split()
                token = server.mint(subject, scopes, form.get("service", ""))
                self._answer(
                    200, {"access_token": token, "expires_in": LIFETIME, "scope": " ".join(scopes)}
                )

            def _answer(self, status: int, doc: object) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _basic_user(self, header: str | None) -> str | None | bool:
        """The user of a valid Basic header, None without one, False for wrong ones."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user if self.users.get(user) == password else False

    def mint(self, subject: str, scopes: list[str], service: str = SERVICE) -> str:
        """A signed token granting `scopes` (`repository:NAME:ACTIONS`) to `subject`; an
        anonymous subject gets no access, as a private registry's token server does."""
        access = []
        for scope in scopes if subject else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": service,
            "exp": now + LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})

    def registry_config(self) -> dict[str, str]:
        """The `auth: token:` section for a distribution registry that trusts this server."""
        return {
            "realm": self.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.cert_file),
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
