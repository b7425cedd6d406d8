"""The built-in plugins come with the core through one extra, ``filterd[plugins]``; a chain that
names a plugin that is not installed says how to install it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from filterd.cli import plugins as cli_plugins
from filterd.cli.main import main
from filterd.cli.plugins import BUILT_IN, INSTALL_WITH_PLUGINS

ROOT = Path(__file__).resolve().parents[2]


def project(path: Path) -> dict[str, object]:
    table = tomllib.loads(path.read_text())["project"]
    assert isinstance(table, dict)
    return table


def test_the_plugins_extra_names_every_plugin_distribution_at_the_core_version() -> None:
    core = project(ROOT / "pyproject.toml")
    found: dict[str, str] = {}
    for path in sorted(ROOT.glob("plugins/*/pyproject.toml")):
        plugin = project(path)
        assert plugin["version"] == core["version"], path
        entry_points = plugin["entry-points"]
        assert isinstance(entry_points, dict)
        (name,) = entry_points["filterd.plugins"]
        found[name] = str(plugin["name"])
    assert found == BUILT_IN
    extras = core["optional-dependencies"]
    assert isinstance(extras, dict)
    assert sorted(extras["plugins"]) == sorted(
        f"{distribution}=={core['version']}" for distribution in BUILT_IN.values()
    )


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_plugins, "installed", dict)


@pytest.mark.usefixtures("nothing_installed")
def test_a_missing_built_in_plugin_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    default = (ROOT / "filterd" / "config" / "defaults.toml").read_text().splitlines()
    line = default.index('plugin = "header_checks"') + 1
    assert err.startswith(
        f"<embedded default>:{line}: chain[0].plugin: no plugin called 'header_checks' is "
        "installed (installed: none) (fix: header_checks is a built-in plugin "
        "(filterd-header-checks): "
    )
    assert err.endswith(f"{INSTALL_WITH_PLUGINS})\n")


def test_an_unknown_plugin_gets_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scan.toml"
    path.write_text('[[chain]]\nplugin = "header_check"\n')
    message = tmp_path / "m.eml"
    message.write_text("Subject: hi\n\nbody\n")
    assert main(["scan", "-c", str(path), str(message)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"{path}:2: chain[0].plugin: no plugin called 'header_check' is installed (installed: "
    )
    assert "(fix: did you mean header_checks? install the package that provides" in err


@pytest.mark.usefixtures("nothing_installed")
def test_filterd_plugins_with_none_installed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    assert capsys.readouterr().out == (
        "no plugins installed (entry point group filterd.plugins); for the built-in ones, "
        f"{INSTALL_WITH_PLUGINS}\n"
    )
