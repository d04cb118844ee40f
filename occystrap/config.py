"""Run settings, built once from flags and environment, then read by every stage."""

from __future__ import annotations

from dataclasses import dataclass

from occystrap.mediatypes import Platform


@dataclass(frozen=True)
class Config:
    parallel: int = 4
    image_parallel: int = 3
    retries: int = 3
    temp_dir: str | None = None
    insecure: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    platform: Platform = Platform("linux", "amd64")
    verify_full: bool = False
    stats: str | None = None
    stats_file: str | None = None
    quiet: bool = False
    verbose: bool = False
    timeout: float = 60.0
