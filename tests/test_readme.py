"""The README is the user's manual: its configuration table must list every knob of Settings."""

from pathlib import Path

from model.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _config_rows() -> dict[str, str]:
    """Map `ENV_VAR` -> the row's text, from the README's configuration table."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `") and "` |" in line:
            name = line.split("`")[1]
            rows[name] = line
    return rows


def test_readme_lists_every_setting_with_its_default():
    rows = _config_rows()
    for name, field in Settings.model_fields.items():
        env_var = name.upper()
        assert env_var in rows, f"README configuration table lacks {env_var}"
        default = field.default
        if default is not None and not isinstance(default, Path):
            assert f"`{default}`" in rows[env_var], f"README row of {env_var} lacks its default `{default}`"


def test_readme_lists_no_setting_that_does_not_exist():
    known = {name.upper() for name in Settings.model_fields}
    # Variables the platform sets or that other tools read, documented beside the knobs.
    external = {"K_REVISION", "PROMETHEUS_MULTIPROC_DIR", "HF_HOME", "HF_HUB_OFFLINE"}
    for env_var in _config_rows():
        if env_var.isupper() and "_" in env_var or env_var == "PORT":
            assert env_var in known | external, f"README documents {env_var}, which Settings does not have"
