-- RCPT refused with the plugin's reply; end of message with header add/insert/change/delete.
-- Globals from the command line: sock (libmilter syntax, e.g. unix:/tmp/x/milter.sock), dir.
dofile(dir .. "/common.lua")

local conn = open_connection()

-- Negotiation: the probe implements on_rcpt and on_message only, so the MTA is asked not to
-- wait for replies to HELO, MAIL, headers and body chunks and not to send end of headers;
-- CONNECT, RCPT, DATA and end of message keep their replies, and every other step is sent
-- (the model needs them).
expect(mt.test_option(conn, SMFIP_NR_HELO), "HELO without a reply (no plugin has on_helo)")
expect(mt.test_option(conn, SMFIP_NR_MAIL), "MAIL without a reply (no plugin has on_mail_from)")
expect(mt.test_option(conn, SMFIP_NR_HDR), "headers without a reply")
expect(mt.test_option(conn, SMFIP_NOEOH), "no end of headers")
expect(mt.test_option(conn, SMFIP_NR_BODY), "body chunks without a reply")
expect(not mt.test_option(conn, SMFIP_NR_CONN), "CONNECT with a reply")
expect(not mt.test_option(conn, SMFIP_NR_RCPT), "RCPT with a reply (the probe has on_rcpt)")
expect(not mt.test_option(conn, SMFIP_NR_DATA), "DATA with a reply")
local steps = {NOCONNECT = SMFIP_NOCONNECT, NOHELO = SMFIP_NOHELO, NOMAIL = SMFIP_NOMAIL,
               NORCPT = SMFIP_NORCPT, NODATA = SMFIP_NODATA, NOHDRS = SMFIP_NOHDRS,
               NOBODY = SMFIP_NOBODY}
for name, bit in pairs(steps) do
  expect(not mt.test_option(conn, bit), "no SMFIP_" .. name .. ": the step is still sent")
end

mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "bob")
step(mt.mailfrom(conn, "<alice@example.net>", "BODY=8BITMIME"), "mailfrom")

step(mt.rcptto(conn, "<refused@example.org>"), "rcptto refused")
expect(mt.getreply(conn) == SMFIR_REPLYCODE, "RCPT refused@ answered with a reply code")

step(mt.rcptto(conn, "<good@example.org>"), "rcptto good")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "RCPT good@ continues")

mt.macro(conn, SMFIC_RCPT, "i", "4XYZ12345")
step(mt.data(conn), "data")
step(mt.header(conn, "Subject", "hello"), "header Subject")
step(mt.header(conn, "X-Remove-Me", "doomed"), "header X-Remove-Me")
step(mt.header(conn, "Received", "from a\n\tby b"), "header Received (folded)")
-- no mt.eoh: the filter asked for SMFIP_NOEOH (the blank line is spooled before the body)
step(mt.bodystring(conn, "line one\r\n"), "body chunk 1")
step(mt.bodystring(conn, "line two\r\n"), "body chunk 2")
step(mt.eom(conn), "eom")
expect(mt.getreply(conn) == SMFIR_CONTINUE, "END-OF-MESSAGE continues")

expect(mt.eom_check(conn, MT_HDRINSERT, "X-Probe-Top", "top", 0), "X-Probe-Top inserted at 0")
expect(mt.eom_check(conn, MT_HDRADD, "X-Probe-Envelope",
  "client=client.example.net[192.0.2.1]:40123 helo=helo.example.net from=alice@example.net"
  .. " to=good@example.org queue_id=4XYZ12345"), "X-Probe-Envelope added with the envelope")
expect(mt.eom_check(conn, MT_HDRADD, "X-Probe-Body",
  "subject=hello received=from a by b lines=line one|line two"),
  "X-Probe-Body: headers and spooled body as the plugin saw them")
expect(mt.eom_check(conn, MT_HDRCHANGE, "Subject", "changed by the probe"), "Subject changed")
expect(mt.eom_check(conn, MT_HDRDELETE, "X-Remove-Me"), "X-Remove-Me deleted")
expect(not mt.eom_check(conn, MT_QUARANTINE), "not quarantined")

-- A second message on the same connection: refused at end of message, reply text checked.
step(mt.mailfrom(conn, "<alice@example.net>"), "mailfrom 2")
step(mt.rcptto(conn, "<good@example.org>"), "rcptto 2")
step(mt.header(conn, "Subject", "reject me"), "header 2")
step(mt.eom(conn), "eom 2")
expect(mt.getreply(conn) == SMFIR_REPLYCODE, "END-OF-MESSAGE 2 answered with a reply code")
expect(mt.eom_check(conn, MT_SMTPREPLY, "554", "5.7.0", "rejected 100%% by the probe"),
  "554 5.7.0 reply with the % doubled")
expect(not mt.eom_check(conn, MT_HDRADD), "no header added to the rejected message")

mt.disconnect(conn)
finish()
