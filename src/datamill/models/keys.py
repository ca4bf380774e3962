"""API keys that a provider's own endpoint needs: a missing one is one line before any call.

Only the providers' own hosts are known to need a key; any other URL may be a keyless local
server, a gateway or a fake, so a missing key there is left to the server to refuse (the 401
line then says which variable to set). The key's value never appears in a message.
"""

from __future__ import annotations

import os
import urllib.parse

from ..errors import ConfigError

#: host → provider, for the hosts where a request without a key is known to fail
PROVIDER_HOSTS = {"api.openai.com": "OpenAI", "api.anthropic.com": "Anthropic"}


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
    """Raise :func:`missing_key`'s line as a ConfigError (exit 2 in the CLI), if any."""
    line = missing_key(base_url, env)
    if line is not None:
        raise ConfigError(line)


__all__ = ["PROVIDER_HOSTS", "missing_key", "require_key"]
