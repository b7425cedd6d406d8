"""Table source text (texthash:, postmap input, inline:{...} and the brace lists of cidr:{}
and unionmap:{}): any text reads without an exception but SourceError
(tests/unit/tables/test_source_format.py)."""

import driver

with driver.instrumented():
    from tests.unit.tables.test_source_format import (
        test_any_text_reads_without_crashing,
        test_brace_parsing_never_crashes,
    )

check_text = driver.prop(test_any_text_reads_without_crashing)
check_braces = driver.prop(test_brace_parsing_never_crashes)


def one_input(given: driver.Input) -> None:
    text = given.rest().decode("utf-8", "surrogateescape")
    check_text(text)
    check_braces(text)


driver.run(one_input)
