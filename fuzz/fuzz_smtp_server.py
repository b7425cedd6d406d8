"""SMTP/LMTP server codec: any session, fed as a pipelining client sends it and cut anywhere,
gives the events of the whole (tests/fuzz/test_smtp_server_fuzz.py)."""

import driver

with driver.instrumented():
    from tests.fuzz.test_smtp_server_fuzz import test_chunking_changes_nothing

check = driver.prop(test_chunking_changes_nothing)


def one_input(given: driver.Input) -> None:
    lmtp, mode = given.flag(), given.pick(["reject", "normalize"])
    policy = [given.flag() for _ in range(given.pick([0, 1, 2, 5]))]
    cuts = given.ints(8)  # before rest(), which takes every byte left
    check(given.rest(), lmtp, mode, policy, cuts)


driver.run(one_input)
