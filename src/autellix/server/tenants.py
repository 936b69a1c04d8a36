"""API keys and the tenants they belong to.

`--api-key KEY` is one key of the tenant "default"; `--api-keys FILE` is a JSON or TOML
file of keys, each naming its tenant and, optionally, the tenant's limits:

    [[keys]]
    key = "sk-alice-1"
    tenant = "alice"
    max_programs = 100   # programs in the process table
    max_calls = 16       # calls in flight
    max_program_calls = 8  # calls in flight of one program
    weight = 2             # its share of a batch's slots when tenants compete (default 1)

(JSON: `{"keys": [{"key": ..., "tenant": ..., ...}]}`.) A tenant's limits may be given on
any of its keys; two keys that give one limit differently are an error. Without keys the
server is open and everything is the tenant "default".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from autellix.programs import DEFAULT_TENANT

log = logging.getLogger("autellix.tenants")


@dataclass(frozen=True)
class Tenant:
    """A tenant and its limits (None: the server's own)."""

    name: str = DEFAULT_TENANT
    max_programs: int | None = None
    max_calls: int | None = None
    max_program_calls: int | None = None
    weight: float | None = None  # None: 1 (autellix.scheduling.shares)


OPEN = Tenant()  # everyone, when the server has no keys
LIMITS = tuple(f.name for f in fields(Tenant) if f.name != "name")


class KeyFileError(ValueError):
    pass


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_key_file(path: str | Path) -> dict[str, Tenant]:
    """key -> its tenant, from a JSON or TOML (by its suffix) key file."""
    text = Path(path).read_text()
    try:
        data = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:  # no keys would be an open server
        raise KeyFileError(f"{path}: expected a list of keys under 'keys'")
    keys: dict[str, Tenant] = {}
    tenants: dict[str, Tenant] = {}
    for i, entry in enumerate(entries):
        key, tenant = parse_entry(entry, f"{path}: keys[{i}]")
        if key in keys:
            raise KeyFileError(f"{path}: keys[{i}]: the key is given twice")
        tenants[tenant.name] = merge(tenants.get(tenant.name), tenant, f"{path}: keys[{i}]")
        keys[key] = tenant
    return {key: tenants[t.name] for key, t in keys.items()}


def parse_entry(entry: Any, where: str) -> tuple[str, Tenant]:
    if not isinstance(entry, dict):
        raise KeyFileError(f"{where}: expected a table/object")
    unknown = entry.keys() - {"key", "tenant", *LIMITS}
    if unknown:
        raise KeyFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    key, name = entry.get("key"), entry.get("tenant")
    if not valid_key(key):
        raise KeyFileError(f"{where}: 'key' must be a non-empty string without spaces")
    if not valid_name(name):
        raise KeyFileError(f"{where}: 'tenant' must be 1-64 printable characters")
    limits = {}
    for limit in LIMITS:
        value = entry.get(limit)
        if limit == "weight":
            if value is not None and not positive_number(value):
                raise KeyFileError(f"{where}: weight must be a positive number")
        elif value is not None and (type(value) is not int or value < 1):
            raise KeyFileError(f"{where}: {limit} must be a positive integer")
        limits[limit] = value
    return str(key), Tenant(str(name), **limits)


def positive_number(value: Any) -> bool:
    return type(value) in (int, float) and 0 < value < float("inf")


def valid_key(key: Any) -> bool:
    return isinstance(key, str) and key.isprintable() and key != "" and " " not in key


def valid_name(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 64 and name.isprintable()


def merge(known: Tenant | None, more: Tenant, where: str) -> Tenant:
    """A tenant's limits from all its keys."""
    if known is None:
        return more
    merged = {}
    for limit in LIMITS:
        a, b = getattr(known, limit), getattr(more, limit)
        if a is not None and b is not None and a != b:
            raise KeyFileError(f"{where}: tenant {more.name!r} has {limit} {a} on another key")
        merged[limit] = a if a is not None else b
    return replace(known, **merged)


class KeyRing:
    """The keys a request may present; none: the server is open."""

    def __init__(self, api_key: str | None = None, key_file: str | None = None) -> None:
        self.api_key = api_key
        self.key_file = key_file
        self._keys: list[tuple[bytes, Tenant]] = []
        self.tenants: dict[str, Tenant] = {}
        self.reload()

    @property
    def open(self) -> bool:
        return not self._keys

    def reload(self) -> None:
        """Read the keys again (the key file may have changed); a bad file raises, and the
        keys stay as they were."""
        keys = read_key_file(self.key_file) if self.key_file else {}
        if self.api_key is not None:
            if not valid_key(self.api_key):
                raise KeyFileError("--api-key must be a non-empty string without spaces")
            if self.api_key in keys:
                raise KeyFileError(f"{self.key_file}: --api-key is also in the key file")
            keys[self.api_key] = keys_tenant(keys, DEFAULT_TENANT)
        self._keys = [(digest(k), t) for k, t in keys.items()]
        self.tenants = {t.name: t for t in keys.values()}

    def reload_logged(self) -> None:
        """On SIGHUP: a bad key file is logged and the old keys kept."""
        try:
            self.reload()
        except (OSError, KeyFileError) as exc:
            log.error("keys not reloaded, the old ones stay: %s", exc)
        else:
            log.info("keys reloaded: %d tenant(s)", len(self.tenants))

    def tenant(self, authorization: str | None) -> Tenant | None:
        """The tenant of a request's Authorization header; None: no valid key. Open: OPEN."""
        if self.open:
            return OPEN
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = digest(key.strip())
        found = None
        for known, tenant in self._keys:  # every key, each in constant time: no early exit
            if hmac.compare_digest(presented, known):
                found = tenant
        return found


def keys_tenant(keys: dict[str, Tenant], name: str) -> Tenant:
    """The tenant `name` as the key file has it (its limits), or a tenant without limits."""
    return next((t for t in keys.values() if t.name == name), Tenant(name))
