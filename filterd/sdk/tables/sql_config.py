"""Postfix's sqlite_table(5), mysql_table(5) and pgsql_table(5) files, read unchanged, and the
``%`` expansions of their ``query`` and ``result_format`` (Postfix's db_common). Sans-I/O:
:func:`parse_sql_config` takes the file's text; the drivers live in :mod:`.sql`.

The file is in main.cf syntax: ``name = value``; a line starting with white space continues
the previous one (joined without a separator, as Postfix does); empty lines and lines whose
first non-blank character is ``#`` are comments; a later setting overrides an earlier one.

Each parameter Postfix reads is either honoured or refused with a :class:`TableError` naming
it (mysql ``tls_*``: filterd opens no TLS connection to MySQL); parameters Postfix does not
read are ignored, as Postfix ignores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from filterd.sdk.tables.base import TableError
from filterd.sdk.tables.names import TableName

__all__ = [
    "DomainFilter",
    "SqlConfig",
    "SqlHost",
    "Template",
    "parse_cf_text",
    "parse_sql_config",
]

Quote = Callable[[str], str]

# Parameters each type reads (Postfix 3.7); any other name in the file is ignored, as there.
_COMMON = {"query", "result_format", "domain", "expansion_limit"}
_LEGACY = {"select_field", "table", "where_field", "additional_conditions"}
_SERVER = {"hosts", "user", "password", "dbname"}
_MYSQL_TLS = ("tls_cert_file", "tls_key_file", "tls_CAfile", "tls_CApath", "tls_ciphers")
_REFUSED: dict[str, dict[str, str]] = {
    "mysql": {
        **{
            name: "filterd does not connect to MySQL over TLS; connect over a unix: socket "
            "or a trusted network and remove " + name
            for name in (*_MYSQL_TLS, "tls_verify_cert")
        },
    },
    "pgsql": {},
    "sqlite": {},
}


@dataclass(frozen=True, slots=True)
class _Setting:
    value: str
    line: int


def parse_cf_text(text: str, file: str, table: str) -> dict[str, tuple[str, int]]:
    """``{name: (value, line)}`` of a file in main.cf syntax, as Postfix's readllines() and
    split_nameval() read it (the line is where the logical line starts)."""
    settings: dict[str, tuple[str, int]] = {}
    logical: list[str] = []
    start = 0

    def finish() -> None:
        if not logical:
            return
        line_text = "".join(logical)
        logical.clear()
        name, eq, value = line_text.partition("=")
        name = name.strip()
        if not eq or not name or any(c.isspace() for c in name):
            problem = "missing attribute name" if not name else "missing '=' after attribute name"
            raise TableError(
                table,
                f'{problem}: "{line_text.strip()}"',
                file=file,
                line=start,
                hint="write name = value (a continued line starts with white space)",
            )
        settings[name] = (value.strip(), start)

    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace() and logical:
            logical.append(raw)
            continue
        finish()
        if raw[0].isspace():  # Postfix warns and skips continuation text without a line
            continue
        logical.append(raw)
        start = number
    finish()
    return settings


# --- templates --------------------------------------------------------------------------


@dataclass
class _Flags:
    key_domain: bool = False
    key_user: bool = False
    value_domain: bool = False
    value_user: bool = False
    nparts: int = 0


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed ``query`` or ``result_format``; the flags of both are shared (as Postfix's
    one parse context is), so :meth:`SqlConfig.expand_query` filters keys for both."""

    text: str
    flags: _Flags = field(compare=False)

    @staticmethod
    def parse(
        text: str, flags: _Flags, *, query: bool, error: Callable[[str], TableError]
    ) -> Template:
        i = 0
        while i < len(text):
            if text[i] == "%":
                i += 1
                c = text[i] if i < len(text) else ""
                if c == "%" or c in ("s", "S"):
                    pass
                elif c == "u":
                    if query:
                        flags.key_user = True
                    else:
                        flags.value_user = True
                elif c == "d":
                    if query:
                        flags.key_domain = True
                    else:
                        flags.value_domain = True
                elif c == "U":
                    flags.key_user = True
                elif c == "D":
                    flags.key_domain = True
                elif c and c in "123456789":
                    flags.nparts = max(flags.nparts, int(c))
                    flags.key_domain = True
                else:
                    raise error(f"invalid {'query' if query else 'result'} template: {text}")
            i += 1
        return Template(text, flags)


def _domain_of(text: str) -> str | None:
    at = text.rfind("@")
    return text[at + 1 :] if at >= 0 else None


def _expand(template: Template, value: str, key: str | None, quote: Quote | None) -> str | None:
    """db_common_expand(): ``template`` with ``value`` (the key for a query, a column for a
    result); None when the value is skipped (as Postfix skips it)."""
    flags = template.flags
    if value == "":
        return None
    kdomain: str | None = None
    if key is not None:
        vdomain = _domain_of(value) if (flags.value_domain or flags.value_user) else None
        if (not vdomain and flags.value_domain) or (
            vdomain is not None and len(value) == len(vdomain) + 1 and flags.value_user
        ):
            return None
        if flags.key_domain or flags.key_user:
            kdomain = _domain_of(key)
        if (not kdomain and flags.key_domain) or (
            kdomain is not None and len(key) == len(kdomain) + 1 and flags.key_user
        ):
            return None
    else:
        vdomain = _domain_of(value) if (flags.key_domain or flags.key_user) else None
        if (not vdomain and flags.key_domain) or (
            vdomain is not None and len(value) == len(vdomain) + 1 and flags.key_user
        ):
            return None
    parts: list[str] = []
    if flags.nparts:
        source = kdomain if key is not None else vdomain
        parts = [label for label in (source or "").split(".") if label]  # as argv_split()
        if len(parts) < flags.nparts:
            return None

    def q(text: str) -> str:
        return quote(text) if quote is not None else text

    def user_of(text: str, domain: str | None) -> str:
        return text[: len(text) - len(domain) - 1] if domain is not None else text

    out: list[str] = []
    text = template.text
    i = 0
    while i < len(text):
        c = text[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        c = text[i + 1]
        i += 2
        if c == "%":
            out.append("%")
        elif c == "s":
            out.append(q(value))
        elif c == "u":
            out.append(q(user_of(value, vdomain)))
        elif c == "d":
            out.append(q(vdomain or ""))
        elif c == "S":
            out.append(q(key if key is not None else value))
        elif c == "U":
            if key is not None:
                out.append(q(user_of(key, kdomain)))
            else:
                out.append(q(user_of(value, vdomain)))
        elif c == "D":
            out.append(q((kdomain if key is not None else vdomain) or ""))
        else:  # %1 .. %9, counted from the right
            out.append(q(parts[len(parts) - int(c)]))
    return "".join(out)


# --- the domain filter --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DomainFilter:
    """The ``domain`` parameter: names (``!`` negates), ``/file`` (one or more names a line,
    expanded in place) and ``type:table`` (a key found there matches), first match wins.
    :attr:`tables` lists the ``type:table`` patterns for the opener; :meth:`match` is given
    their answers."""

    patterns: tuple[tuple[bool, str], ...]  # (matches, lower-case name or "type:table")

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(p for _, p in self.patterns if _is_table(p))


def _is_table(pattern: str) -> bool:
    return not pattern.startswith("[") and ":" in pattern


def _split_list(text: str) -> list[str]:
    return [item for item in text.replace(",", " ").split() if item]


def parse_domain_list(
    text: str, read_file: Callable[[str], str], error: Callable[[str, str], TableError]
) -> DomainFilter:
    patterns: list[tuple[bool, str]] = []
    reading: list[str] = []  # the /file entries being expanded, outermost first

    def add(items: list[str], init: bool) -> None:
        for item in items:
            if item.startswith("#"):
                break
            match = init
            while item.startswith("!"):
                match = not match
                item = item[1:]
            if not item:
                raise error("no pattern after '!' in domain", "write a name after !")
            if item.startswith("/"):
                if item in reading:  # would expand forever
                    chain = " -> ".join([*reading, item])
                    raise error(
                        f"domain: {item} includes itself ({chain})",
                        f"remove {item} from {reading[-1]}",
                    )
                try:
                    content = read_file(item)
                except OSError as exc:
                    raise error(
                        f"domain: cannot read {item}: {exc.strerror or exc}",
                        f"create {item} or remove it from domain",
                    ) from None
                reading.append(item)
                for line in content.splitlines():
                    if not line.startswith("#"):
                        add(_split_list(line), match)
                reading.pop()
            elif _is_table(item):
                patterns.append((match, item))
            else:
                patterns.append((match, item.lower()))

    add(_split_list(text), True)
    return DomainFilter(tuple(patterns))


# --- the whole file -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SqlHost:
    """One ``hosts`` entry. ``kind``: "unix" (``address`` a socket path, or for pgsql the
    socket's directory), "inet" (``address`` a host name, ``port`` or None), "uri" (pgsql
    ``postgresql://``); ``text`` as written."""

    text: str
    kind: str
    address: str
    port: str | None


@dataclass(frozen=True, slots=True)
class SqlConfig:
    type: str
    file: str
    query: Template
    result_format: Template
    expansion_limit: int
    domain: DomainFilter | None
    hosts: tuple[SqlHost, ...] = ()
    user: str = ""
    password: str = ""
    dbname: str = ""
    dbpath: str = ""
    require_result_set: bool = True
    option_file: str | None = None
    option_group: str = "client"

    def expand_query(self, key: str, quote: Quote | None) -> str | None:
        """The SQL for ``key`` (already folded), or None when Postfix would not query it."""
        return _expand(self.query, key, None, quote)

    def expand_result(self, value: str | None, key: str) -> str | None:
        """One column's contribution to the answer, or None when skipped (NULL, empty, or
        lacking the parts result_format needs)."""
        if value is None:
            return None
        return _expand(self.result_format, value, key, None)

    def domain_gate(self, key: str) -> str | None:
        """The domain of ``key`` the domain filter must match, or "" when the key is never
        queried (no domain or an empty localpart); None without a domain filter."""
        if self.domain is None:
            return None
        at = key.rfind("@")
        if at <= 0:
            return ""
        return key[at + 1 :]


def _hosts(kind: str, text: str) -> tuple[SqlHost, ...]:
    entries = _split_list(text) or ["localhost"]
    hosts: list[SqlHost] = []
    for entry in entries:
        if kind == "pgsql" and entry.startswith("postgresql:"):
            hosts.append(SqlHost(entry, "uri", entry, None))
            continue
        rest = entry
        if kind == "mysql":
            unix = rest.startswith("unix:")
            if unix or rest.startswith("inet:"):
                rest = rest[5:]
            name, colon, port = rest.rpartition(":")
            address, port_text = (name, port) if colon else (rest, None)
            if address.lower() == "localhost":
                hosts.append(SqlHost(entry, "unix", "", port_text))
            else:
                hosts.append(SqlHost(entry, "unix" if unix else "inet", address, port_text))
        else:
            if rest.startswith(("unix:", "inet:")):
                rest = rest[5:]
            if rest and not rest.startswith("/"):
                name, colon, port = rest.rpartition(":")
                address, port_text = (name, port) if colon else (rest, None)
                hosts.append(SqlHost(entry, "inet", address, port_text))
            else:
                hosts.append(SqlHost(entry, "unix", rest, None))
    return tuple(hosts)


def parse_sql_config(
    name: TableName, text: str, read_file: Callable[[str], str] | None = None
) -> SqlConfig:
    """Read a sqlite:/mysql:/pgsql: file's ``text`` as Postfix does; TableError for what
    Postfix refuses (and for the parameters filterd refuses), naming the file, line and fix.
    ``read_file`` reads the ``/file`` entries of ``domain``."""
    kind, file, table = name.type, name.name, str(name)
    settings = parse_cf_text(text, file, table)

    def err(message: str, hint: str, key: str | None = None) -> TableError:
        line = settings[key][1] if key is not None and key in settings else None
        return TableError(table, message, file=file, line=line, hint=hint)

    for key, reason in _REFUSED[kind].items():
        if key in settings:
            raise err(f"{key} is not supported", reason, key)

    def get(key: str, default: str | None, minimum: int = 0) -> str | None:
        value = settings[key][0] if key in settings else default
        if value is not None and minimum and len(value) < minimum:
            raise err(
                f"{key} must not be empty",
                f"set {key} = ... (Postfix refuses this file too)",
                key,
            )
        return value

    def get_int(key: str) -> int:
        if key not in settings:
            return 0
        raw = settings[key][0]
        try:
            return int(raw, 10)
        except ValueError:
            raise err(f"bad number: {key} = {raw}", f"write {key} = a whole number", key) from None

    def get_bool(key: str, default: bool) -> bool:
        if key not in settings:
            return default
        raw = settings[key][0].lower()
        if raw not in ("yes", "no"):
            raise err(f"bad boolean: {key} = {raw}", f"write {key} = yes or no", key)
        return raw == "yes"

    query = get("query", None)
    if query is None and kind == "pgsql" and "select_function" in settings:
        query = f"SELECT {settings['select_function'][0]}('%s')"
    if query is None:
        parts = {}
        for key in ("table", "select_field", "where_field"):
            value = get(key, None, 1)
            if value is None:
                raise err(
                    f"neither query nor {key} is set",
                    "set query = SELECT ... '%s' (or the legacy table, select_field and "
                    "where_field)",
                )
            parts[key] = value
        extra = get("additional_conditions", "") or ""
        query = (
            f"SELECT {parts['select_field']} FROM {parts['table']} "
            f"WHERE {parts['where_field']}='%s' {extra}"
        )
    flags = _Flags()
    query_key = "query" if "query" in settings else None
    result_text = get("result_format", "%s", 1) or "%s"

    def template_error(key: str | None) -> Callable[[str], TableError]:
        return lambda message: err(message, "use only %%, %s, %u, %d, %S, %U, %D and %1 .. %9", key)

    query_template = Template.parse(query, flags, query=True, error=template_error(query_key))
    result_template = Template.parse(
        result_text, flags, query=False, error=template_error("result_format")
    )
    domain = None
    domain_text = get("domain", "") or ""
    if domain_text:

        def domain_error(message: str, hint: str) -> TableError:
            return err(message, hint, "domain")

        domain = parse_domain_list(domain_text, read_file or _read_text, domain_error)
    common: dict[str, object] = {
        "type": kind,
        "file": file,
        "query": query_template,
        "result_format": result_template,
        "expansion_limit": get_int("expansion_limit"),
        "domain": domain,
    }
    if kind == "sqlite":
        return SqlConfig(**common, dbpath=get("dbpath", "", 1) or "")  # type: ignore[arg-type]
    return SqlConfig(
        **common,  # type: ignore[arg-type]
        hosts=_hosts(kind, get("hosts", "") or ""),
        user=get("user", "") or "",
        password=get("password", "") or "",
        dbname=get("dbname", "", 1) or "",
        require_result_set=get_bool("require_result_set", True) if kind == "mysql" else True,
        option_file=get("option_file", None) if kind == "mysql" else None,
        option_group=(get("option_group", "client") or "") if kind == "mysql" else "client",
    )


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()
