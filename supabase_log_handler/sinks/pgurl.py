"""Reading a PostgreSQL connection string without showing its password.

``SUPABASE_DB_URL`` is a libpq URI (``postgresql://user:password@host:6543/db``)
or a ``key=value`` string. Whatever is shown (settings, the spool's destination
label, error messages) goes through :func:`describe`, which keeps the user,
host, port and database and drops everything else. Pure string work: no import
of psycopg.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

_KEYWORDS = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def looks_like_db_url(text: str) -> bool:
    """True for a libpq URI or a ``key=value`` connection string naming a host or database."""
    text = text.strip()
    if re.match(r"postgres(ql)?://", text):
        return bool(urlsplit(text).hostname or "host=" in text)
    keys = {k for k, _ in _KEYWORDS.findall(text)}
    return bool(keys & {"host", "hostaddr", "dbname", "service"})


def parts(text: str) -> dict[str, str]:
    """user, host, port and dbname of a connection string (those it names)."""
    text = text.strip()
    out: dict[str, str] = {}
    if re.match(r"postgres(ql)?://", text):
        url = urlsplit(text)
        if url.username:
            out["user"] = unquote(url.username)
        try:
            host, port = url.hostname, url.port
        except ValueError:  # a port that is not a number (or several hosts)
            host, port = url.hostname, None
        if host:
            out["host"] = host
        if port:
            out["port"] = str(port)
        if url.path.strip("/"):
            out["dbname"] = unquote(url.path.strip("/"))
        return out
    for key, value in _KEYWORDS.findall(text):
        if key in ("user", "host", "port", "dbname"):
            out[key] = value.strip("'")
    return out


def describe(text: str) -> str:
    """``user@host:port/dbname``: enough to recognise the target, never the password."""
    p = parts(text)
    user = f"{p['user']}@" if "user" in p else ""
    port = f":{p['port']}" if "port" in p else ""
    return f"{user}{p.get('host', '?')}{port}/{p.get('dbname', '')}"
