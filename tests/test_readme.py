"""The README is the user's manual: its configuration table is the one Settings prints."""

import re
from pathlib import Path

from model.settings import Settings, env_default, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_configuration_table_is_the_settings_table():
    """`python -m model settings` prints it; paste that into the README when a knob changes."""
    assert settings_table() in README.read_text(encoding="utf-8")


def test_settings_table_lists_every_knob_once_with_its_default_as_the_environment_spells_it():
    table = settings_table()
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE)
    assert listed == [name.upper() for name in Settings.model_fields]
    for row in ("| `MAX_BODY_BYTES` | `4194304` |", "| `ACCESS_LOG` | `false` |", "| `BATCHING` | `true` |",
                "| `REDIS_URL` | unset |", "| `ARTIFACT_CACHE_DIR` | `~/.cache/sentiment-service` |",
                "| `QUEUE_MAX_WAIT_SECONDS` | `10.0` |", "| `PRECISION` | `auto` |"):
        assert row in table


def test_env_defaults_read_back_as_the_defaults(monkeypatch):
    """What the table shows as a default, written into the environment, gives the same setting."""
    for name, field in Settings.model_fields.items():
        shown = env_default(name)
        if shown != "unset":
            monkeypatch.setenv(name.upper(), str(Path(shown.strip("`")).expanduser()) if "~" in shown else shown.strip("`"))
    assert Settings() == Settings.model_construct(**{n: f.default for n, f in Settings.model_fields.items()})
