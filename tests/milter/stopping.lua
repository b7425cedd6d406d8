-- After SIGTERM: a new connection is either no longer accepted, or refused with a 4xx reply;
-- never let through unchecked.
dofile(dir .. "/common.lua")
-- mt.connect raises an error when nothing listens (filterd closes its listener at once).
local connected, conn = pcall(mt.connect, sock, 1, 0.1)
if not connected or conn == nil then
  print("ok connection refused: libmilter stopped listening")
  os.exit(0)
end
local ok, err = pcall(function()
  return mt.conninfo(conn, "client.example.net", "192.0.2.1")
end)
if not ok or err ~= nil then
  print("ok connection dropped unanswered")
  os.exit(0)
end
local reply = mt.getreply(conn)
expect(reply == SMFIR_REPLYCODE or reply == SMFIR_TEMPFAIL, "CONNECT refused with 4xx while stopping")
finish()
