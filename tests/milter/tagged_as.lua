-- One message through example_tagger, on a connection of its own: it is answered and tagged
-- with the text given as -D tag=TEXT (tests/integration/test_milter_reload.py: the chain of the
-- configuration in force, before and after a reload).
dofile(dir .. "/common.lua")
local conn = open_connection()
step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom")
step(mt.rcptto(conn, "<good@example.org>"), "rcptto")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "RCPT continues")
step(mt.data(conn), "data")
step(mt.header(conn, "Subject", "reloaded"), "header")
step(mt.bodystring(conn, "body\r\n"), "body")
step(mt.eom(conn), "eom")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "END-OF-MESSAGE continues")
expect(mt.eom_check(conn, MT_HDRINSERT, "X-Example-Tag", tag)
       or mt.eom_check(conn, MT_HDRADD, "X-Example-Tag", tag), "tagged " .. tag)
mt.disconnect(conn)
finish()
