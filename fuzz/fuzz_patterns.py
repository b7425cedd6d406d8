"""regexp:/pcre: tables (the header_checks engine): any bytes are a table or a RuleError, and
any key looked up answers (tests/fuzz/test_tables_fuzz.py)."""

import driver

with driver.instrumented():
    from tests.fuzz.test_tables_fuzz import (
        test_any_bytes_are_a_pattern_table_or_a_rule_error as test,
    )

check = driver.prop(test)


def one_input(given: driver.Input) -> None:
    flavour = given.pick(["regexp", "pcre"])  # before rest(), which takes every byte left
    check(given.rest(), flavour)


driver.run(one_input)
