"""The ``[alerts]`` table and the webhook variable: every bad value is a ConfigError that
says what to do, and none of them echoes the webhook URL (it is a credential). Also the
payload's escaping and the Retry-After parsing, which need no server."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import pytest

from secure_ds._secret import Secret
from secure_ds.config import Settings
from secure_ds.cost import PriceTable
from secure_ds.cost._alerts import (
    MAX_RETRY_AFTER_S,
    AlertSender,
    BudgetAlert,
    _retry_after,
    alert_payload,
)
from secure_ds.cost._budgets import AlertConfig, parse_budgets
from secure_ds.cost._meter import BudgetMeter
from secure_ds.errors import ConfigError
from tests._budget_files import assert_budgets_file_refused

TOKEN = "XyZsecretWebhookToken0123456789"
BUDGET = '[[budget]]\nscope = "org"\nname = "acme"\nperiod = "month"\nhard_usd = 10\n'


def test_alerts_table_defaults_and_explicit_values() -> None:
    config = parse_budgets(tomllib.loads('[alerts]\nwebhook_url_env = "SECURE_DS_ALERT_WEBHOOK"'))
    assert config.alerts == AlertConfig("SECURE_DS_ALERT_WEBHOOK", 5.0, 4, 0.5)
    table = '[alerts]\nwebhook_url_env = "OPS_HOOK"\ntimeout_s = 2\nmax_attempts = 1\n'
    custom = parse_budgets(tomllib.loads(table + "backoff_s = 0"))
    assert custom.alerts == AlertConfig("OPS_HOOK", 2.0, 1, 0.0)
    assert parse_budgets(tomllib.loads(BUDGET)).alerts is None  # no table: no alerts


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alerts = 5", "`alerts` must be a table"),
        ("[alerts]\ntimeout_s = 5", "webhook_url_env must be the name of the environment"),
        ("[alerts]\nwebhook_url_env = ''", "webhook_url_env must be the name"),
        ("[alerts]\nwebhook_url_env = 'BAD-NAME'", "webhook_url_env must be the name"),
        ("[alerts]\nwebhook_url_env = 'X'\ntimeout_s = 0", "timeout_s must be a number"),
        ("[alerts]\nwebhook_url_env = 'X'\ntimeout_s = 'slow'", "timeout_s must be a number"),
        ("[alerts]\nwebhook_url_env = 'X'\ntimeout_s = inf", "timeout_s must be a number"),
        ("[alerts]\nwebhook_url_env = 'X'\nmax_attempts = 0", "max_attempts must be an integer"),
        ("[alerts]\nwebhook_url_env = 'X'\nmax_attempts = 2.5", "max_attempts must be an"),
        ("[alerts]\nwebhook_url_env = 'X'\nmax_attempts = true", "max_attempts must be an"),
        ("[alerts]\nwebhook_url_env = 'X'\nbackoff_s = -1", "backoff_s must be a number"),
        ("[alerts]\nwebhook_url_env = 'X'\nretries = 3", "unknown key 'retries'"),
    ],
)
def test_alerts_table_errors_name_the_problem_and_the_fix(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert_budgets_file_refused(tmp_path, text, problem)


@pytest.mark.parametrize(
    ("text", "advice"),
    [
        (
            f'[alerts]\nwebhook_url = "https://hooks.slack.com/services/T/B/{TOKEN}"',
            'name that variable, e.g. webhook_url_env = "SECURE_DS_ALERT_WEBHOOK"',
        ),
        (
            f'[alerts]\nwebhook_url_env = "https://hooks.slack.com/services/T/B/{TOKEN}"',
            'e.g. "SECURE_DS_ALERT_WEBHOOK", not the URL',
        ),
    ],
)
def test_a_url_written_in_the_file_is_refused_without_echoing_it(text: str, advice: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_budgets(tomllib.loads(text))
    message = f"{info.value} {info.value.hint}"
    assert TOKEN not in message
    assert "hooks.slack.com" not in message
    assert advice in message  # what to do instead: name the variable


def test_a_missing_webhook_variable_is_a_config_error_naming_it() -> None:
    config = AlertConfig("SECURE_DS_ALERT_WEBHOOK")
    for environ in ({}, {"SECURE_DS_ALERT_WEBHOOK": "  "}):
        with pytest.raises(ConfigError) as info:
            AlertSender.from_config(config, environ)
        assert info.value.variable == "SECURE_DS_ALERT_WEBHOOK"
        assert "is not set" in str(info.value)
        assert "Set SECURE_DS_ALERT_WEBHOOK to the incoming-webhook URL" in info.value.hint
        assert "or remove [alerts]" in info.value.hint


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://hooks.slack.com/services/T/B/{TOKEN}", "must be an https URL, not http"),
        (f"http://10.0.0.5/services/T/B/{TOKEN}", "must be an https URL, not http"),
        (f"ftp://hooks.slack.com/{TOKEN}", "must be an https URL, not ftp"),
        (f"hooks.slack.com/services/T/B/{TOKEN}", "not a valid URL"),
        (f"https:///services/{TOKEN}", "not a valid URL (no host)"),
        (f"https://hooks.slack.com:port/{TOKEN}", "not a valid URL"),
    ],
)
def test_a_bad_webhook_url_is_refused_without_echoing_it(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        AlertSender.from_config(AlertConfig("OPS_HOOK"), {"OPS_HOOK": url})
    assert info.value.variable == "OPS_HOOK"
    assert problem in str(info.value)
    assert "https://..." in info.value.hint
    assert TOKEN not in f"{info.value} {info.value.hint}"


@pytest.mark.parametrize(
    "url",
    [
        f"https://hooks.slack.com/services/T/B/{TOKEN}",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://localhost/hook",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    sender = AlertSender.from_config(AlertConfig("OPS_HOOK", max_attempts=2), {"OPS_HOOK": url})
    assert TOKEN not in repr(sender)  # the repr names the variable, not the URL
    assert repr(sender) == "AlertSender(source='OPS_HOOK')"
    sender.close()


def test_from_settings_needs_the_variable_before_opening_a_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(BUDGET + '[alerts]\nwebhook_url_env = "SECURE_DS_TEST_HOOK"\n')
    db = tmp_path / "meter.db"
    settings = Settings(
        token_provider="api-key",
        api_key=Secret("sk-test"),
        budgets=path,
        meter_backend="sqlite",
        meter_db=db,
    )
    monkeypatch.delenv("SECURE_DS_TEST_HOOK", raising=False)
    with pytest.raises(ConfigError) as info:
        BudgetMeter.from_settings(settings, PriceTable.load())
    assert info.value.variable == "SECURE_DS_TEST_HOOK"
    assert not db.exists()  # failed before the ledger was opened: nothing left behind
    monkeypatch.setenv("SECURE_DS_TEST_HOOK", "https://hooks.example/services/x")
    meter = BudgetMeter.from_settings(settings, PriceTable.load())
    try:
        assert isinstance(meter.alerts, AlertSender)
    finally:
        meter.close()
    # without an [alerts] table there is no sender, whatever the environment holds
    path.write_text(BUDGET)
    plain = BudgetMeter.from_settings(settings, PriceTable.load())
    plain.close()
    assert plain.alerts is None


def _alert(name: str, principal: str) -> BudgetAlert:
    return BudgetAlert(
        scope="team",
        name=name,
        period="month",
        period_id="2026-11",
        spent_usd=Decimal("40"),
        reserved_usd=Decimal("2.125"),
        soft_usd=Decimal("40"),
        hard_usd=Decimal("50"),
        resets_at=datetime(2026, 12, 1, tzinfo=UTC),
        principal=principal,
        crossed_at=datetime(2026, 11, 28, tzinfo=UTC),
    )


def test_payload_escapes_slack_markup_in_names() -> None:
    # a subject or team chosen to ping a whole channel must arrive as plain text
    payload = alert_payload(_alert("<!channel>", "mallory&<@U123>"))
    texts = [payload["text"]] + [f["text"] for f in payload["blocks"][2]["fields"]]
    assert not any("<!channel>" in t or "<@U123>" in t for t in texts)
    assert "team budget &lt;!channel&gt;" in payload["text"]
    assert "*Crossed by*\nmallory&amp;&lt;@U123&gt;" in texts
    # the amounts: $42.125 of $50 is 84.25%, shown rounded
    assert "$42.125 spent or held, 84% of the $50.00 hard limit" in payload["text"]
    assert len(payload["blocks"][2]["fields"]) <= 10  # Slack's limit for a section


def test_retry_after_reads_seconds_and_dates_and_is_capped() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after("0.5") == 0.5
    assert _retry_after("-4") == 0.0
    assert _retry_after("86400") == MAX_RETRY_AFTER_S  # a day would stall every alert
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = _retry_after(soon)
    assert seconds is not None
    assert 0 < seconds <= 30
    for junk in (None, "soon", "nan", "inf"):
        assert _retry_after(junk) is None  # then the backoff applies
