"""Milter mappings: any header edits on any header section give, applied by Postfix, the SMTP
proxy's result; any CONNECT/MAIL/RCPT maps (tests/fuzz/test_milter_map_fuzz.py)."""

import driver

with driver.instrumented():
    from filterd.model.edits import AddHeader, ChangeHeader, Edit, InsertHeader, RemoveHeader
    from tests.fuzz.test_milter_map_fuzz import (
        test_modifications_give_what_the_proxy_gives as test_edits,
    )
    from tests.fuzz.test_milter_map_fuzz import (
        test_whatever_postfix_sends_maps_to_the_model as test_envelope,
    )

check_edits, check_envelope = driver.prop(test_edits), driver.prop(test_envelope)
NAMES = ["To", "to", "X-Spam", "x-spam", "Received", "Subject", "B"]


def edit(given: driver.Input) -> Edit:
    name, value = given.pick(NAMES), given.text(6).replace("\r", "").replace("\x00", "") or "v"
    value = value.replace("\n", "\n ")
    match given.pick(range(4)):
        case 0:
            return AddHeader(name, value, given.flag())
        case 1:
            return InsertHeader(given.pick(range(-2, 9)), name, value)
        case 2:
            return ChangeHeader(name, value, given.pick([1, 2, 3]))
        case _:
            return RemoveHeader(name, given.pick([0, 1, 2, 3]))


def one_input(given: driver.Input) -> None:
    names = [given.pick(NAMES) for _ in range(given.pick(range(9)))]
    check_edits(names, [edit(given) for _ in range(given.pick(range(11)))])
    texts = [given.text(20) for _ in range(5)]
    macros = {"{client_addr}": texts[0], "{client_port}": texts[1], "i": texts[2]}
    hostaddr = given.pick([None, texts[3], (texts[3], given.pick(range(-1, 70000)))])
    check_envelope(texts[4], hostaddr, macros, texts[0], texts[1:3], macros, texts[2])


driver.run(one_input)
