#!/usr/bin/env bash
# Installs the Debian packages filterd's tests and `make run` need. Idempotent; needs root.
# Daemons that the packages would start are kept down (the tests start their own private instances).
set -euo pipefail
# procps: pgrep, used by tests/e2e to prove a private Postfix left no process behind.
# util-linux (essential, named for clarity): unshare and setpriv, used by the start-up failure tests.
# postfix-policyd-spf-python: Debian's policyd-spf, the baseline of bench/policy_bench.py.
# pflogsumm: reads filterd's log in tests/e2e/test_log_pflogsumm.py; systemd: the private
# systemd-journald and journalctl of the same test (the journal and syslog destinations).
# dovecot-core: the Dovecot auth service the SMTP AUTH tests check passwords against (tests/e2e).
# systemd also gives systemd-analyze verify and security, run on deploy/systemd/filterd.service
# by tests/integration/test_systemd_unit.py (no systemd needs to be running).
# python3 (Debian's): what the privilege tests run filterd with when the virtualenv's Python is
# one that user nobody cannot run (below /root): tests/integration/test_privileges.py.
# postfix-{mysql,pgsql,sqlite,lmdb,cdb}: postmap -q, the reference of the lookup-table tests;
# mariadb-server, postgresql: the real database servers those tests start (private, temporary);
# libdb5.3-dev: builds the berkeleydb binding (hash: and btree: tables).
# postgrey, postfwd: the references of the policy plugins' differential tests and benchmarks;
# redis-server: the shared state store those tests start (private, temporary).
PKGS="postgrey postfwd redis-server postfix postfix-pcre postfix-mysql postfix-pgsql postfix-sqlite postfix-lmdb postfix-cdb mariadb-server postgresql libdb5.3-dev swaks python3-venv libmilter-dev miltertest procps spamassassin spamc spamd razor pyzor python3-gdbm postfix-policyd-spf-python util-linux pflogsumm systemd dovecot-core python3"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-system-packages: need root to install:$missing" >&2
  exit 1
fi
# Never let a package's postinst start a system-wide daemon.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
