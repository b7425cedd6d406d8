"""header_checks(5) rule files: any text is a table or a TableError, and any header looked up
answers a Match or nothing (plugins/header_checks/tests/test_fuzz.py checks the same)."""

import driver

with driver.instrumented():
    from filterd_header_checks.action_table import TableError, parse_table


def one_input(given: driver.Input) -> None:
    flavour = given.pick(["regexp", "pcre"])
    headers = [given.bytes(40) for _ in range(given.pick(range(4)))]
    try:
        table = parse_table(given.rest(), flavour, timeout=2.0)
    except TableError:
        return
    for header in headers:
        table.lookup(header)
        table.lookup_body(header)


driver.run(one_input)
