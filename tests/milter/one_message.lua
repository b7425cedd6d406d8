-- One message through example_tagger, on a connection of its own (tests/integration/
-- test_milter_processes.py runs it against filterd with several processes): it is answered
-- and tagged, whichever process accepted the connection.
dofile(dir .. "/common.lua")
local conn = open_connection()
step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom")
step(mt.rcptto(conn, "<good@example.org>"), "rcptto")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "RCPT continues")
step(mt.data(conn), "data")
step(mt.header(conn, "Subject", "spread"), "header")
step(mt.bodystring(conn, "body\r\n"), "body")
step(mt.eom(conn), "eom")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "END-OF-MESSAGE continues")
expect(mt.eom_check(conn, MT_HDRINSERT, "X-Example-Tag", "tagged")
       or mt.eom_check(conn, MT_HDRADD, "X-Example-Tag", "tagged"), "tagged by example_tagger")
mt.disconnect(conn)
finish()
