"""cidr: tables: any text is rules or a TableError naming a line
(tests/fuzz/test_tables_fuzz.py)."""

import driver

with driver.instrumented():
    from tests.fuzz.test_tables_fuzz import test_a_cidr_file_is_rules_or_a_table_error as test

check = driver.prop(test)


def one_input(given: driver.Input) -> None:
    check(given.rest().decode("utf-8", "surrogateescape"))


driver.run(one_input)
