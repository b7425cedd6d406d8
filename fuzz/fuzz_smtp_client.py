"""SMTP/LMTP client codec: any reply bytes, cut anywhere, give the replies and the error of
the whole (tests/fuzz/test_smtp_client_fuzz.py)."""

import driver

with driver.instrumented():
    from tests.fuzz.test_smtp_client_fuzz import (
        test_any_bytes_cut_anywhere_give_the_same_replies_and_error as test,
    )

check = driver.prop(test)


def one_input(given: driver.Input) -> None:
    owed, lmtp, eof, cuts = given.pick(range(6)), given.flag(), given.flag(), given.ints(8)
    check(owed, lmtp, given.rest(), cuts, eof)


driver.run(one_input)
