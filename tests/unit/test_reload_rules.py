"""What a reload cannot change (``fixed_settings``), how listeners of two configurations are
matched (``listener_keys``), and the slots of a shared count that workers of two generations hold
at once (``TallySlots``)."""

from __future__ import annotations

from pathlib import Path

from filterd.config.load import load_config
from filterd.config.schema import Config
from filterd.runtime.listener_set import listener_keys
from filterd.runtime.reload import fixed_settings
from filterd.runtime.tally import TallySlots


def config(tmp_path: Path, milter: str, name: str = "new.toml") -> Config:
    path = tmp_path / name
    path.write_text(
        f"""
[[listen]]
address = "127.0.0.1:10025"
[delivery]
method = "relay"
next_hop = "127.0.0.1:10026"
{milter}"""
    )
    return load_config(path)


MILTER = '[[listen]]\naddress = "{address}"\nprotocol = "milter"\nprocesses = {processes}\n'


def milter(address: str = "127.0.0.1:8891", processes: int = 1) -> str:
    return MILTER.format(address=address, processes=processes)


def test_everything_but_the_milter_listener_may_change(tmp_path: Path) -> None:
    assert fixed_settings(config(tmp_path, ""), config(tmp_path, "")) == []
    assert fixed_settings(config(tmp_path, milter()), config(tmp_path, milter())) == []
    several = config(tmp_path, milter(processes=2))
    assert fixed_settings(several, config(tmp_path, milter(processes=4))) == []


def test_the_milter_listener_cannot_move(tmp_path: Path) -> None:
    old = config(tmp_path, milter(), "old.toml")
    new = config(tmp_path, milter("127.0.0.1:8892"))
    (problem,) = fixed_settings(old, new)
    assert problem.describe() == (
        f"{tmp_path / 'new.toml'}:8: listen[1].address: the milter listener's address cannot "
        "change at reload (libmilter binds 127.0.0.1:8891 once per process) (fix: put back "
        'address = "127.0.0.1:8891", or restart filterd (systemctl restart filterd))'
    )


def test_the_milter_listener_cannot_come_go_or_change_between_one_and_several(
    tmp_path: Path,
) -> None:
    one, none = config(tmp_path, milter(), "old.toml"), config(tmp_path, "")
    (added,) = fixed_settings(none, one)
    assert (added.key, added.line) == ("listen[1].protocol", 9)
    assert "cannot be added by a reload" in added.message
    (removed,) = fixed_settings(one, none)
    assert "cannot be removed by a reload" in removed.message
    (more,) = fixed_settings(one, config(tmp_path, milter(processes=2)))
    assert more.key == "listen[1].processes"
    assert "from one process to several" in more.message


def test_listeners_are_matched_by_address() -> None:
    cfg = Config.model_validate(
        {
            "listen": [
                {"address": "127.0.0.1:0"},
                {"address": "127.0.0.1:10025"},
                {"address": "127.0.0.1:0", "protocol": "policy"},
                {"address": "unix:/run/filterd.sock"},
            ]
        },
        context={"serving": False},
    )
    assert listener_keys(cfg.listen) == [
        "127.0.0.1:0",
        "127.0.0.1:10025",
        "127.0.0.1:0#2",  # each port 0 gets a port of its own: matched by its place
        "unix:/run/filterd.sock",
    ]


def test_tally_slots_are_never_held_twice() -> None:
    slots = TallySlots(4)  # slot 0 is the main process's
    taken = [slots.take(), slots.take(), slots.take()]
    assert taken == [1, 2, 3]
    assert slots.take() is None
    slots.give_back(2)
    assert slots.take() == 2
