"""spamd client codec: any response bytes, cut anywhere, give the response and the error of
the whole (tests/fuzz/test_spamd_fuzz.py)."""

import driver

with driver.instrumented():
    from filterd.protocols.spamd import Command
    from tests.fuzz.test_spamd_fuzz import (
        test_any_bytes_cut_anywhere_give_the_same_response_and_error as test,
    )

check = driver.prop(test)


def one_input(given: driver.Input) -> None:
    command, eof, cuts = given.pick(list(Command)), given.flag(), given.ints(8)
    check(command, given.rest(), cuts, eof)


driver.run(one_input)
