-- Shared helpers for filterd's miltertest scripts (run by tests/integration/test_milter_miltertest.py).
-- miltertest exits 1 without a word on an unhandled Lua error, so every check prints its result
-- ("ok ..." / "FAIL ...") and the script ends with os.exit(1) if any check failed.
failed = false

function expect(cond, what)
  if cond then
    print("ok " .. what)
  else
    print("FAIL " .. what)
    failed = true
  end
end

function step(result, what)
  -- mt.* steps return nil on success, an error string otherwise
  if result ~= nil then
    print("FAIL " .. what .. ": " .. tostring(result))
    failed = true
  end
end

function open_connection()
  local conn = mt.connect(sock, 50, 0.1)
  if conn == nil then
    print("FAIL mt.connect(" .. sock .. ")")
    os.exit(1)
  end
  mt.macro(conn, SMFIC_CONNECT, "j", "mta.filterd.test", "{daemon_name}", "smtpd",
           "{client_port}", "40123")
  step(mt.conninfo(conn, "client.example.net", "192.0.2.1"), "conninfo")
  expect(mt.getreply(conn) == SMFIR_CONTINUE, "CONNECT continues")
  step(mt.helo(conn, "helo.example.net"), "helo")
  if not mt.test_option(conn, SMFIP_NR_HELO) then  -- else HELO has no reply to check
    expect(mt.getreply(conn) == SMFIR_CONTINUE, "HELO continues")
  end
  return conn
end

function finish()
  if failed then
    os.exit(1)
  end
end
