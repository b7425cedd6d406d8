"""Policy codec and mapping: any bytes, cut anywhere, give the requests and the error of the
whole, and every request maps to an envelope (tests/fuzz/test_policy_fuzz.py)."""

import driver

with driver.instrumented():
    from tests.fuzz.test_policy_fuzz import (
        test_any_bytes_cut_anywhere_give_the_same_requests_and_error as test_cut,
    )
    from tests.fuzz.test_policy_fuzz import test_every_request_maps_to_an_envelope as test_map

check_cut, check_map = driver.prop(test_cut), driver.prop(test_map)


def one_input(given: driver.Input) -> None:
    cuts = given.ints(8)
    data = given.rest()
    check_cut(data, cuts)
    check_map(data)


driver.run(one_input)
