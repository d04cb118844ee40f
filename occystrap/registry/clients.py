"""ClientPool: one RegistryClient per (host, plain-HTTP?) for a stage process, made on first use.

Clients are made after the fork, in the process that uses them: a connection pool must never
be shared between processes.
"""

from __future__ import annotations

import threading

from occystrap.config import Config
from occystrap.registry.client import RegistryClient
from occystrap.registry.credentials import credentials_for


class ClientPool:
    """Clients for one role: "src" registries are read, "dest" registries written."""

    def __init__(self, config: Config, pool_size: int, role: str = "src") -> None:
        self.config = config
        self.role = role
        self.pool_size = pool_size
        self._clients: dict[tuple[str, bool], RegistryClient] = {}
        self._lock = threading.Lock()  # fetch threads ask at once

    def get(self, host: str, insecure: bool) -> RegistryClient:
        key = (host, insecure)
        with self._lock:
            if key in self._clients:
                return self._clients[key]
            creds = credentials_for(
                host,
                *self.config.credentials(self.role),
                authfile=self.config.authfile,
                helpers=self.config.credential_helpers,
            )
            self._clients[key] = RegistryClient(
                host,
                insecure=insecure,
                tls_verify=self.config.tls_verify,
                ca_file=self.config.ca_file,
                credentials=creds,
                retries=self.config.retries,
                timeout=self.config.timeout,
                pool_size=self.pool_size,
            )
            return self._clients[key]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
