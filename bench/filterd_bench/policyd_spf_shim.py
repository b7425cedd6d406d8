"""Debian's policyd-spf, with its DNS lookups sent to the benchmark's loopback DNS server.

    /usr/bin/python3 bench/filterd_bench/policyd_spf_shim.py DNS_PORT CONFIG

Run by the system Python (where Debian installs ``spf_engine``), not the project's virtualenv.
/usr/bin/policyd-spf is ``from spf_engine.policyd_spf import main; sys.exit(main())``, and
policyd-spf has no resolver setting: pyspf resolves through the system's resolver library.
Debian's python3-spf uses py3dns (module ``DNS``): importing ``spf`` calls
``DNS.DiscoverNameServers()``, which reads /etc/resolv.conf into ``DNS.defaults["server"]``,
and every ``DNS.DnsRequest`` takes its server list and port from ``DNS.defaults``. This shim
imports ``spf``, replaces those two defaults (only this process is affected; /etc/resolv.conf
is not touched), then runs policyd-spf's own ``main`` on the given configuration file. Should
pyspf have picked dnspython instead (installed next to it), its module-wide default resolver
is replaced the same way.
"""

from __future__ import annotations

import sys


def _point_dns_at(port: int) -> str:
    import spf

    if getattr(spf, "DNSLookup", None) is getattr(spf, "DNSLookup_pydns", None):
        import DNS  # type: ignore[import-not-found]

        DNS.defaults["server"] = ["127.0.0.1"]
        DNS.defaults["port"] = port
        return "py3dns"
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    dns.resolver.default_resolver = resolver
    return "dnspython"


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: policyd_spf_shim.py DNS_PORT CONFIG", file=sys.stderr)
        return 2
    backend = _point_dns_at(int(sys.argv[1]))
    print(f"policyd_spf_shim: pyspf's DNS ({backend}) -> 127.0.0.1:{sys.argv[1]}", file=sys.stderr)
    sys.argv = ["policyd-spf", sys.argv[2]]
    from spf_engine.policyd_spf import main as policyd_spf_main  # type: ignore[import-not-found]

    result = policyd_spf_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
