"""Which backend the dashboard and the CLI talk to, and with which API key.

Order: the URL from `--api` or `ECO_API_URL` (else `api_url` in the config file);
the key from `ECO_API_KEY` (else `api_key` in the config file). With no URL at
all, the embedded default: the local backend of the user's state directory,
started in the background if none runs (`ecotui.embedded.ensure_backend`).
The config file is `${XDG_CONFIG_HOME:-~/.config}/ecotui/config.toml`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Connection:
    """A backend URL and the API key to use on it."""

    url: str
    key: str
    source: str = "explicit"  # "explicit", "config" or "embedded"


class ConfigError(Exception):
    """The connection settings cannot be used as given (a usage error, exit 2)."""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "ecotui" / "config.toml"


def load_config(path: Path) -> dict[str, Any]:
    """The config file's table, `{}` when there is none."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for k in ("api_url", "api_key"):
        if k in data and not isinstance(data[k], str):
            raise ConfigError(f"{path}: {k} must be a string")
    return data


def resolve_connection(
    api_url: str | None, api_key: str | None, *, env: Mapping[str, str] | None = None
) -> Connection:
    """Resolve the backend to use; falls back to the embedded default backend."""
    env = os.environ if env is None else env
    url = api_url or env.get("ECO_API_URL") or None
    key = api_key or env.get("ECO_API_KEY") or None
    source = "explicit"
    if url is None or key is None:
        cfg = load_config(config_path(env))
        if url is None and cfg.get("api_url"):
            url = cfg["api_url"]
            source = "config"
        if key is None and cfg.get("api_key"):
            key = cfg["api_key"]
    if url is None:
        # Imported here: the embedded backend pulls in process management that
        # attaching to a remote backend never needs.
        from ecotui.embedded import ensure_backend

        emb = ensure_backend()
        return Connection(url=emb.url, key=emb.key, source="embedded")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the backend URL must start with http:// or https://, not {url!r}")
    if not key:
        raise ConfigError(f"no API key for {url}: set ECO_API_KEY or api_key in {config_path(env)}")
    return Connection(url=url.rstrip("/"), key=key, source=source)
