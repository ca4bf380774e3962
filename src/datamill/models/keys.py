"""API keys that a provider's own endpoint needs: a missing one is one line before any call.

Only the providers' own hosts are known to need a key; any other URL may be a keyless local
server, a gateway or a fake, so a missing key there is left to the server to refuse (the 401
line then says which variable to set). The key's value never appears in a message.

A missing key is a :class:`MissingKey`: a ConfigError (the CLI exits 2) that is also a
ModelUnavailable, so a run with a call cache stops at the first call the cache cannot answer,
before sending it (a re-run served entirely from the cache needs no key), and ``datamill plan``,
whose preview calls the model, stops at once.
"""

from __future__ import annotations

import os
import urllib.parse

from ..errors import ConfigError, ModelUnavailable

#: host → provider, for the hosts where a request without a key is known to fail
PROVIDER_HOSTS = {"api.openai.com": "OpenAI", "api.anthropic.com": "Anthropic"}


class MissingKey(ConfigError, ModelUnavailable):
    """A provider's own endpoint without its API key (one line: which variable to set)."""


def missing_key(base_url: str, env: str) -> str | None:
    """One line saying ``$env`` must be set, when ``base_url`` is a provider's own endpoint and
    ``$env`` is unset or empty; else None."""
    host = urllib.parse.urlsplit(base_url).hostname or ""
    provider = PROVIDER_HOSTS.get(host.lower())
    if provider is None or os.environ.get(env):
        return None
    return (
        f"${env} is not set: export your {provider} API key as {env} "
        "(or name another variable with api_key_env) before the run"
    )


def require_key(base_url: str, env: str) -> None:
    """Raise :func:`missing_key`'s line as a :class:`MissingKey`, if any."""
    line = missing_key(base_url, env)
    if line is not None:
        raise MissingKey(line, reason="missing API key")


__all__ = ["PROVIDER_HOSTS", "MissingKey", "missing_key", "require_key"]
