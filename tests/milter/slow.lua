-- A message whose check takes a few seconds (the probe sleeps on Subject "slow"): the test
-- sends SIGTERM while it is in progress; a graceful stop still answers it normally.
dofile(dir .. "/common.lua")
mt.set_timeout(30)
local conn = open_connection()
step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom")
step(mt.rcptto(conn, "<good@example.org>"), "rcptto")
step(mt.header(conn, "Subject", "slow"), "header")
step(mt.eom(conn), "eom")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "slow message answered after SIGTERM")
expect(mt.eom_check(conn, MT_HDRADD, "X-Probe-Envelope"), "slow message edited")
mt.disconnect(conn)
finish()
