from pathlib import Path

import pytest

from autonomy.settings import Settings, SettingsError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_are_the_packs_section_1_values():
    s = Settings.from_env({})
    assert s.auto_remediate is False  # the pack's loop: off unless AUTO_REMEDIATE is exactly "true"
    assert s.max_attempts == 2
    assert (s.slo_success, s.slo_align, s.slo_backlog_min) == (0.94, 0.95, 15)
    assert s.priority == ("Revenue", "Marketing", "Content")
    assert s.budget_cap_daily_usd == 25


def test_settings_are_read_from_the_environment():
    s = Settings.from_env({"AUTO_REMEDIATE": "false", "AUTOREM_SLO_SUCCESS": "0.90",
                           "AUTOREM_PRIORITY": "Revenue, Content"})
    assert (s.auto_remediate, s.slo_success, s.priority) == (False, 0.90, ("Revenue", "Content"))


def test_every_problem_is_reported_at_once_with_its_name():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTO_REMEDIATE": "maybe", "AUTOREM_SLO_SUCCESS": "1.5", "AUTOREM_MAX_ATTEMPTS": "0",
                           "AUTOREM_PRIORITY": ",", "AUTOREM_BUDGET_CAP_DAILY_USD": "lots"})
    assert caught.value.errors == (
        "AUTO_REMEDIATE: 'maybe' is neither true nor false (remediation runs only when it is exactly true)",
        "AUTOREM_MAX_ATTEMPTS: '0' is below the minimum of 1",
        "AUTOREM_SLO_SUCCESS: '1.5' is above the maximum of 1",
        "AUTOREM_PRIORITY: must list at least one name",
        "AUTOREM_BUDGET_CAP_DAILY_USD: 'lots' is not a number",
    )


@pytest.mark.parametrize("value, on", [("true", True), ("false", False)])
def test_auto_remediate_is_on_only_when_exactly_true(value, on):
    assert Settings.from_env({"AUTO_REMEDIATE": value}).auto_remediate is on


@pytest.mark.parametrize("value", ["True", "TRUE", "1", "yes", "on", " true", "true ", ""])
def test_auto_remediate_values_that_look_like_true_are_refused_not_guessed(value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTO_REMEDIATE": value})
    assert caught.value.errors == (
        f"AUTO_REMEDIATE: {value!r} is neither true nor false (remediation runs only when it is exactly true)",)


def test_a_token_comes_from_a_file_and_prints_only_its_name(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cr3t-value\n")
    s = Settings.from_env({"AUTOREM_EXPORTER_TOKEN_FILE": str(path)})
    assert s.exporter_token.reveal() == "s3cr3t-value"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.exporter_token)


@pytest.mark.parametrize("env, message", [
    ({"AUTOREM_EXPORTER_TOKEN": "a", "AUTOREM_EXPORTER_TOKEN_FILE": "/x"}, "not both"),
    ({"AUTOREM_EXPORTER_TOKEN_FILE": "/nonexistent/token"}, "cannot read AUTOREM_EXPORTER_TOKEN_FILE"),
    ({"AUTOREM_EXPORTER_TOKEN": "  "}, "AUTOREM_EXPORTER_TOKEN: is set but empty"),
])
def test_bad_token_settings_are_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_readme_configuration_table_lists_every_setting_with_its_default():
    text = README.read_text()
    for name, default, _ in Settings.table():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{name} missing from the README configuration table"
        assert f"`{default}`" in row or (default == "" and "(unset)" in row), row


def test_a_url_setting_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTOREM_PROMETHEUS_URL": "http://user:hunter2@prometheus:9090"})
    assert "must not carry credentials" in str(caught.value) and "hunter2" not in str(caught.value)


def test_several_alertmanagers_are_accepted_comma_separated():
    s = Settings.from_env({"AUTOREM_ALERTMANAGER_URL": "http://am-a:9093, http://am-b:9093/"})
    assert s.alertmanager_url == "http://am-a:9093,http://am-b:9093"
