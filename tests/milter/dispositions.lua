-- Quarantine (hold queue), Discard and TempFail decided at RCPT, answered as milters must.
dofile(dir .. "/common.lua")

local conn = open_connection()

step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom hold")
step(mt.rcptto(conn, "<hold@example.org>"), "rcptto hold")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "RCPT hold@ continues (held at end of message)")
step(mt.header(conn, "Subject", "hold me"), "header hold")
step(mt.eom(conn), "eom hold")
expect(mt.getreply(conn) == SMFIR_ACCEPT, "held message accepted")
expect(mt.eom_check(conn, MT_QUARANTINE, "held by the probe"), "quarantine with the reason")
expect(mt.eom_check(conn, MT_HDRADD, "X-Probe-Envelope"), "edits still sent with the hold")

step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom drop")
step(mt.rcptto(conn, "<drop@example.org>"), "rcptto drop")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "RCPT drop@ continues (dropped at end of message)")
step(mt.eom(conn), "eom drop")
expect(mt.getreply(conn) == SMFIR_DISCARD, "dropped message discarded")

step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom later")
step(mt.rcptto(conn, "<later@example.org>"), "rcptto later")
expect(mt.getreply(conn) == SMFIR_REPLYCODE, "RCPT later@ answered with a (4xx) reply code")
step(mt.abort(conn), "abort")

mt.disconnect(conn)
finish()
