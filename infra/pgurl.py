"""PostgreSQL connection URLs: libpq-style `postgresql://` URLs into the pieces eventsourcing needs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class PostgresParams:
    """The connection pieces ``eventsourcing.postgres`` needs.

    ``host`` is a host name / IP address, or the socket *directory* for a Unix-socket connection
    (any value starting with ``/``), exactly as libpq's ``host`` parameter.
    """

    host: str
    port: int
    user: str
    password: str
    dbname: str

    def env(self) -> dict[str, str]:
        """Return the ``POSTGRES_*`` environment keys read by ``eventsourcing.postgres``."""
        return {
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
        }

    @property
    def url(self) -> str:
        """Return an equivalent ``postgresql://`` URL (Unix sockets go in the ``host`` query key)."""
        userinfo = quote(self.user, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        dbname = quote(self.dbname, safe="")
        if self.host.startswith("/"):
            host_q = quote(self.host, safe="/")
            return f"postgresql://{userinfo}@/{dbname}?host={host_q}&port={self.port}"
        host = f"[{self.host}]" if ":" in self.host else quote(self.host, safe="")
        return f"postgresql://{userinfo}@{host}:{self.port}/{dbname}"


def _split_query(query: str) -> dict[str, str]:
    """Parse a URL query the way libpq does (percent-decoding, but ``+`` stays a plus)."""
    result: dict[str, str] = {}
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        result[unquote(key)] = unquote(value)
    return result


def _split_hostport(hostport: str) -> tuple[str, str]:
    """Split the host[:port] part of a netloc; the host stays percent-encoded."""
    if "," in hostport:
        raise ValueError(f"multi-host PostgreSQL URLs are not supported: {hostport!r}")
    if hostport.startswith("["):  # [IPv6]:port
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 address in PostgreSQL URL: {hostport!r}")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"garbage after IPv6 address in PostgreSQL URL: {hostport!r}")
        return host, rest[1:]
    host, sep, port = hostport.rpartition(":")
    if not sep:
        return hostport, ""
    return host, port


def parse_postgres_url(url: str) -> PostgresParams:
    """Parse a libpq-style ``postgresql://`` (or ``postgres://``) URL.

    Handles ``postgresql://user:pass@host:port/db``, the Unix-socket forms
    ``postgresql://user@/db?host=/tmp/x&port=5432`` and ``postgresql://user@%2Ftmp%2Fx:5432/db``, and
    query keys ``host``, ``port``, ``user``, ``password`` and ``dbname`` (which override the URL parts).

    Defaults where libpq would consult its environment or compiled-in defaults: host ``localhost``,
    port 5432, user ``postgres``, password ``""``, dbname = the user.
    """
    parts = urlsplit(url)
    if parts.scheme not in PG_SCHEMES:
        raise ValueError(f"not a postgresql:// URL: {url!r}")
    userinfo, sep, hostport = parts.netloc.rpartition("@")
    if not sep:
        userinfo, hostport = "", parts.netloc
    raw_user, _, raw_password = userinfo.partition(":")
    raw_host, raw_port = _split_hostport(hostport)
    query = _split_query(parts.query)

    host = query.get("host") or unquote(raw_host) or "localhost"
    port_text = query.get("port") or unquote(raw_port) or "5432"
    user = query.get("user") or unquote(raw_user) or "postgres"
    password = query.get("password", unquote(raw_password))
    dbname = query.get("dbname") or unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not port_text.isdigit():
        raise ValueError(f"invalid port {port_text!r} in PostgreSQL URL")
    return PostgresParams(host=host, port=int(port_text), user=user, password=password, dbname=dbname or user)


def postgres_env(url: str) -> dict[str, str]:
    """Convert a ``postgresql://`` URL into eventsourcing's ``POSTGRES_*`` environment keys.

    Returns POSTGRES_DBNAME, POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER and POSTGRES_PASSWORD;
    for a Unix-socket URL, POSTGRES_HOST is the socket directory.
    """
    return parse_postgres_url(url).env()
