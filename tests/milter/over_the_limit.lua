-- max_connections = 1 over every process (tests/integration/test_milter_processes.py): while one
-- connection is open, each further one is refused with a 4xx at CONNECT, whichever process
-- accepted it (with a count per process, those that another process accepted would pass).
dofile(dir .. "/common.lua")
local first = open_connection()
for extra = 1, 4 do
  local conn = mt.connect(sock, 50, 0.1)
  if conn == nil then
    print("FAIL mt.connect(" .. sock .. ")")
    os.exit(1)
  end
  step(mt.conninfo(conn, "client.example.net", "192.0.2.1"), "conninfo")
  local reply = mt.getreply(conn)
  expect(reply == SMFIR_REPLYCODE or reply == SMFIR_TEMPFAIL,
         "connection " .. (extra + 1) .. " refused at CONNECT")
  mt.disconnect(conn)
end
mt.disconnect(first)
finish()
