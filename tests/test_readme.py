"""The README is the user's manual: its configuration table is the one Settings prints."""

from pathlib import Path

from model.settings import Settings, env_default, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_configuration_table_is_the_settings_table():
    """`python -m model settings` prints it; paste that into the README when a knob changes."""
    assert settings_table() in README.read_text(encoding="utf-8")


def test_settings_table_lists_every_knob_with_its_default():
    table = settings_table()
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` | {env_default(name)} |" in table


def test_env_defaults_read_back_as_the_defaults(monkeypatch):
    """What the table shows as a default, written into the environment, gives the same setting."""
    for name, field in Settings.model_fields.items():
        shown = env_default(name)
        if shown != "unset":
            monkeypatch.setenv(name.upper(), str(Path(shown.strip("`")).expanduser()) if "~" in shown else shown.strip("`"))
    assert Settings() == Settings.model_construct(**{n: f.default for n, f in Settings.model_fields.items()})
