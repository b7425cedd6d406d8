"""sqlite:/mysql:/pgsql: files: any text is a config or a TableError, and every key expands
(tests/fuzz/test_tables_fuzz.py)."""

import driver

with driver.instrumented():
    from tests.fuzz.test_tables_fuzz import test_a_sql_file_is_a_config_or_a_table_error as test

check = driver.prop(test)


def one_input(given: driver.Input) -> None:
    kind = given.pick(["sqlite", "mysql", "pgsql"])
    keys = [given.text(20) for _ in range(given.pick(range(4)))]
    check(kind, given.rest().decode("utf-8", "surrogateescape"), keys)


driver.run(one_input)
