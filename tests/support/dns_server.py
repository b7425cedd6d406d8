"""A small authoritative DNS server on loopback for tests: UDP and TCP on one free port of
127.0.0.1, zone data from a dict, served from a thread. dnslib does the wire format.

```python
zone = {
    "example.com": [{"TXT": "v=spf1 mx -all"}, {"MX": (10, "mx.example.com")}],
    "mx.example.com": [{"A": "192.0.2.1"}, {"AAAA": "2001:db8::1"}],
    "long.example.com": [{"TXT": ["v=spf1 ip4:192.0.2.0/24", " -all"]}],   # two strings
    "slow.example.com": ["TIMEOUT"],                # never answered
    "broken.example.com": [{"RCODE": "SERVFAIL"}],  # every query answered SERVFAIL
}
with DnsServer(zone) as server:
    resolve_with(server.address)                    # "127.0.0.1:PORT"
    server.queries                                  # [("example.com", "TXT", "udp"), ...]
```

Zone semantics (answers as a recursive resolver in front of the zone would give them):

- Names are case-insensitive, a trailing dot is optional. A name that is not in the zone is
  NXDOMAIN; a name without records of the asked type is NODATA (NOERROR, no answer). Both
  negative answers carry the root's SOA in the authority section (its minimum is
  ``negative_ttl``), so resolvers cache them for that long. Every record has the TTL ``ttl``.
- Records, one per dict: ``{"A": "192.0.2.1"}``, ``{"AAAA": "2001:db8::1"}``,
  ``{"MX": (10, "mx.example.com")}`` (an empty exchange is the root, "no mail"),
  ``{"TXT": value}`` and ``{"SPF": value}`` (type 99) where value is a str, bytes or a list of
  them (the character-strings; str is UTF-8; a string over 255 bytes is split into 255-byte
  strings, as zone compilers require; ``[]`` is served as a zero-length RDATA, which RFC 1035
  §3.3.14 does not allow), ``{"PTR": "name"}``, ``{"CNAME": "target"}``.
- A CNAME answers every type: the answer is the CNAME and then the target's answer, followed
  along the chain; a loop is answered with the CNAMEs up to where it closes.
- ``"TIMEOUT"``: types with a record listed before the marker are answered, every other query
  of the name is never answered (the openspf test-suite convention). ``{"TIMEOUT": "TXT"}``:
  queries of that type only are never answered.
- ``"NXDOMAIN"``: the name answers NXDOMAIN whatever else is listed.
- ``{"RCODE": "SERVFAIL"}`` (any rcode name: FORMERR, SERVFAIL, NOTIMP, REFUSED, ...): every
  query of the name is answered with that rcode and no records.
- UDP answers fit the client's EDNS payload size (512 bytes without EDNS); a larger answer is
  sent truncated (TC), so the client retries over TCP.

``set_zone`` swaps the data while the server runs. ``stop`` (or leaving the ``with``) closes
every socket and joins the thread.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import selectors
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dnslib import (  # type: ignore[import-untyped]
    AAAA,
    CNAME,
    EDNS0,
    MX,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    TXT,
    A,
    DNSError,
    DNSRecord,
)

__all__ = ["NXDOMAIN", "TIMEOUT", "DnsServer", "Zone"]

TIMEOUT = "TIMEOUT"
NXDOMAIN = "NXDOMAIN"
SPF_TYPE = 99  # RFC 4408 type SPF; dnslib has no class for it, its RDATA is TXT's

Zone = Mapping[str, Sequence[object]]
Labels = tuple[bytes, ...]

_RR_TYPES: dict[str, int] = {
    "A": QTYPE.A,
    "AAAA": QTYPE.AAAA,
    "MX": QTYPE.MX,
    "TXT": QTYPE.TXT,
    "SPF": SPF_TYPE,
    "PTR": QTYPE.PTR,
    "CNAME": QTYPE.CNAME,
}
_TYPE_NAMES = {code: name for name, code in _RR_TYPES.items()}
_MAX_CHAIN = 16  # CNAMEs followed for one answer
_ZONE_APEX: Labels = ()  # the server is authoritative for the root: the SOA of negative answers


def _labels(name: str) -> Labels:
    text = name.rstrip(".")
    return tuple(label.lower() for label in text.encode("utf-8").split(b".")) if text else ()


def _strings(value: object) -> list[bytes]:
    """TXT/SPF character-strings: split over-long ones into 255-byte pieces."""
    items = value if isinstance(value, list | tuple) else [value]
    out: list[bytes] = []
    for item in items:
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        out.extend(raw[i : i + 255] for i in range(0, len(raw), 255))
        if not raw:
            out.append(b"")
    return out


@dataclass
class _Name:
    """What the zone says about one owner name."""

    records: list[tuple[int, object]] = field(default_factory=list)  # (rtype, dnslib rdata)
    answered_before_timeout: set[int] | None = None  # set when a bare TIMEOUT is listed
    timeout_types: set[int] = field(default_factory=set)
    nxdomain: bool = False
    rcode: int | None = None
    cname: Labels | None = None


def _rdata(rtype: str, value: object) -> object:
    match rtype:
        case "A":
            return A(str(ipaddress.IPv4Address(str(value))))
        case "AAAA":
            return AAAA(str(ipaddress.IPv6Address(str(value))))
        case "MX":
            if not isinstance(value, list | tuple) or len(value) != 2:
                raise ValueError(f"MX wants (preference, exchange), got {value!r}")
            return MX(_labels(str(value[1])), int(value[0]))
        case "TXT" | "SPF":
            return TXT(_strings(value))
        case "PTR":
            return PTR(_labels(str(value)))
        case "CNAME":
            return CNAME(_labels(str(value)))
    raise ValueError(f"unsupported record type {rtype!r}")


def compile_zone(zone: Zone) -> dict[Labels, _Name]:
    """Check and index zone data (errors surface here, not in the server thread)."""
    compiled: dict[Labels, _Name] = {}
    for owner, entries in zone.items():
        node = compiled.setdefault(_labels(owner), _Name())
        for entry in entries:
            if entry == TIMEOUT:
                node.answered_before_timeout = {rtype for rtype, _ in node.records}
            elif entry == NXDOMAIN:
                node.nxdomain = True
            elif isinstance(entry, Mapping) and len(entry) == 1:
                ((key, value),) = entry.items()
                if key == "RCODE":
                    node.rcode = getattr(RCODE, str(value))
                elif key == "TIMEOUT":
                    node.timeout_types.add(_RR_TYPES[str(value)])
                elif key in _RR_TYPES:
                    if key == "CNAME":
                        node.cname = _labels(str(value))
                    node.records.append((_RR_TYPES[key], _rdata(key, value)))
                else:
                    raise ValueError(f"{owner}: unknown entry {entry!r}")
            else:
                raise ValueError(f"{owner}: unknown entry {entry!r}")
    return compiled


class DnsServer:
    """An authoritative DNS server for ``zone`` on 127.0.0.1, UDP and TCP, one free port."""

    def __init__(self, zone: Zone, *, ttl: int = 60, negative_ttl: int = 60) -> None:
        self._zone = compile_zone(zone)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.queries: list[tuple[str, str, str]] = []  # (name, type, "udp" | "tcp")
        self._udp, self._tcp = _bind_pair()
        self.port: int = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as a resolver setting."""
        return f"127.0.0.1:{self.port}"

    def set_zone(self, zone: Zone) -> None:
        self._zone = compile_zone(zone)
        self.queries.clear()

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):  # the thread may have seen the flag and gone already
            self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        self._wake_w.close()
        if self._thread.is_alive():  # pragma: no cover - the loop always notices the wake-up
            raise RuntimeError("dns server thread did not stop")

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- answering ------------------------------------------------------------------------

    def answer(self, packet: bytes, transport: str) -> bytes | None:
        """The reply to one query packet; None means "never answer"."""
        try:
            request = DNSRecord.parse(packet)
        except (DNSError, struct.error, IndexError):
            return None
        if len(request.questions) != 1:
            reply = request.reply()
            reply.header.rcode = RCODE.FORMERR
            return bytes(reply.pack())
        question = request.questions[0]
        qname: Labels = tuple(label.lower() for label in question.qname.label)
        qtype: int = question.qtype
        type_name = _TYPE_NAMES.get(qtype, str(qtype))
        self.queries.append((b".".join(qname).decode("utf-8", "replace"), type_name, transport))
        reply = request.reply(ra=1, aa=1)
        limit = 65535
        if transport == "udp":
            limit = 512
            for extra in request.ar:
                if extra.rtype == QTYPE.OPT:
                    limit = max(512, extra.rclass)
                    reply.add_ar(EDNS0(udp_len=min(extra.rclass, 4096)))
        if not self._fill(reply, qname, qtype):
            return None
        data = bytes(reply.pack())
        if len(data) > limit:
            truncated = request.reply(ra=1, aa=1)
            truncated.header.tc = 1
            data = bytes(truncated.pack())
        return data

    def _fill(self, reply: DNSRecord, qname: Labels, qtype: int) -> bool:
        """Put the answer in ``reply``; False when the query must go unanswered."""
        zone = self._zone
        seen: set[Labels] = set()
        name = qname
        for _ in range(_MAX_CHAIN):
            node = zone.get(name)
            if node is None or node.nxdomain:  # (RFC 6604: the rcode is the last name's)
                reply.header.rcode = RCODE.NXDOMAIN
                self._add_soa(reply)
                return True
            if qtype in node.timeout_types:
                return False
            if node.answered_before_timeout is not None and (
                qtype not in node.answered_before_timeout
            ):
                return False
            if node.rcode is not None:
                reply.header.rcode = node.rcode
                return True
            matching = [rd for rtype, rd in node.records if rtype == qtype]
            if matching or node.cname is None or qtype == QTYPE.CNAME:
                for rdata in matching:
                    reply.add_answer(RR(name, qtype, rdata=rdata, ttl=self.ttl))
                if not matching:
                    self._add_soa(reply)
                return True
            reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(node.cname), ttl=self.ttl))
            seen.add(name)
            name = node.cname
            if name in seen:  # a loop: the CNAMEs so far are the answer
                return True
        return True

    def _add_soa(self, reply: DNSRecord) -> None:
        times = (1, 3600, 600, 86400, self.negative_ttl)
        soa = SOA((b"ns", *_ZONE_APEX), (b"hostmaster", *_ZONE_APEX), times)
        reply.add_auth(RR(_ZONE_APEX, QTYPE.SOA, rdata=soa, ttl=self.negative_ttl))

    # --- the server thread ----------------------------------------------------------------

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        connections: dict[socket.socket, bytearray] = {}
        selector.register(self._udp, selectors.EVENT_READ, "udp")
        selector.register(self._tcp, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if key.data == "wake":
                        return
                    if key.data == "udp":
                        self._serve_udp()
                    elif key.data == "accept":
                        conn, _ = self._tcp.accept()
                        conn.settimeout(2.0)  # recv only when readable; bounded sends
                        connections[conn] = bytearray()
                        selector.register(conn, selectors.EVENT_READ, "tcp")
                    elif not self._serve_tcp(sock, connections[sock]):
                        selector.unregister(sock)
                        del connections[sock]
                        sock.close()
        finally:
            for conn in connections:
                conn.close()
            selector.close()
            self._udp.close()
            self._tcp.close()
            self._wake_r.close()

    def _serve_udp(self) -> None:
        try:
            packet, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        data = self.answer(packet, "udp")
        if data is not None:
            try:
                self._udp.sendto(data, peer)
            except OSError:
                pass

    def _serve_tcp(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Read what arrived and answer complete queries; False when the connection is done."""
        try:
            chunk = conn.recv(65535)
        except OSError:
            return False
        if not chunk:
            return False
        buffer.extend(chunk)
        while len(buffer) >= 2:
            (length,) = struct.unpack("!H", buffer[:2])
            if len(buffer) < 2 + length:
                break
            packet = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            data = self.answer(packet, "tcp")
            if data is not None:
                try:
                    conn.sendall(struct.pack("!H", len(data)) + data)
                except OSError:
                    return False
        return True


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same free port of 127.0.0.1."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError as exc:
            udp.close()
            tcp.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        tcp.listen(16)
        return udp, tcp
    raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")
