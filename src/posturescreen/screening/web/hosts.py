"""Which Host header names the local server answers (DNS rebinding: a web page elsewhere
must not make a browser talk to it): loopback names, the bound address, and names the user
allows."""

from __future__ import annotations

import re

from posturescreen.errors import PostureScreenError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class HostNameError(PostureScreenError):
    """An --allow-host value that is not a host name or address."""


def allowed_hosts(bind: str, extra: list[str]) -> list[str]:
    """Host header names the server accepts: loopback, the bound address, and --allow-host
    names (checked here: Starlette would stop on a malformed pattern with a traceback)."""
    hosts = list(LOOPBACK_HOSTS)
    if bind not in ("0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):
        extra = [bind, *extra]
    for name in extra:
        name = name.strip().lower()
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"  # an IPv6 address, as a Host header writes it
        if name != "*" and not re.fullmatch(r"(\*\.)?[a-z0-9\[\]:._-]{1,253}", name):
            raise HostNameError(f"--allow-host {name!r}: expected a host name or address such "
                                "as screening.example.org, 192.168.1.20, *.example.org or '*'")
        hosts.append(name)
    return list(dict.fromkeys(hosts))
