"""Prices as data: the shipped table, peak windows, cost from DeepSeek's usage fields,
and clear errors for a broken table."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from secure_ds.cost import PriceTable
from secure_ds.errors import ConfigError


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return time.mktime((year, month, day, hour, minute, 0, 0, 0, 0)) - time.timezone


MONDAY = (2026, 11, 23)
SATURDAY = (2026, 11, 28)
USAGE = {
    "prompt_tokens": 1000,
    "prompt_cache_hit_tokens": 200,
    "prompt_cache_miss_tokens": 800,
    "completion_tokens": 500,
    "completion_tokens_details": {"reasoning_tokens": 100},
}


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


@pytest.mark.parametrize(
    ("day", "hour", "minute", "window"),
    [
        (MONDAY, 0, 59, "off_peak"),
        (MONDAY, 1, 0, "peak"),  # start inclusive
        (MONDAY, 3, 59, "peak"),
        (MONDAY, 4, 0, "off_peak"),  # end exclusive
        (MONDAY, 6, 0, "peak"),
        (MONDAY, 9, 59, "peak"),
        (MONDAY, 10, 0, "off_peak"),
        (MONDAY, 23, 0, "off_peak"),
        (SATURDAY, 7, 0, "off_peak"),  # weekends are off-peak all day
        ((2026, 11, 27), 7, 0, "peak"),  # a Friday
    ],
)
def test_peak_windows_on_weekdays_only(
    table: PriceTable, day: tuple[int, int, int], hour: int, minute: int, window: str
) -> None:
    assert table.window(utc(*day, hour, minute)) == window


def test_cost_uses_cache_hit_miss_and_output_prices(table: PriceTable) -> None:
    off = table.cost("deepseek-flash", USAGE, utc(*MONDAY, 12))
    assert off is not None
    # 200 x 0.003 + 800 x 0.15 + 500 x 0.60, per million tokens
    assert off.usd == Decimal("0.0004206")
    assert off.window == "off_peak"
    assert off.tokens == {
        "input_cache_hit": 200,
        "input_cache_miss": 800,
        "output": 500,
        "reasoning": 100,  # part of the 500 output tokens: recorded, not billed twice
    }
    peak = table.cost("deepseek-flash", USAGE, utc(*MONDAY, 7))
    assert peak is not None
    assert peak.usd == off.usd * 2  # flash peak prices are exactly double
    assert peak.record["usd"] == pytest.approx(0.0008412)


def test_v4_pro_prices(table: PriceTable) -> None:
    cost = table.cost("deepseek-v4-pro", USAGE, utc(*SATURDAY, 12))
    assert cost is not None
    expected = (200 * Decimal("0.022") + 800 * Decimal("0.66") + 500 * Decimal("1.98")) / 10**6
    assert cost.usd == expected


def test_missing_cache_split_counts_every_prompt_token_as_a_miss(table: PriceTable) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 0}
    cost = table.cost("deepseek-flash", usage, utc(*SATURDAY, 12))
    assert cost is not None
    assert cost.tokens["input_cache_miss"] == 1000
    assert cost.usd == Decimal("0.00015")


def test_a_pinned_model_is_priced_by_its_name(table: PriceTable) -> None:
    assert table.cost("deepseek-flash@2026-10-17", USAGE, utc(*MONDAY, 12)) is not None


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("gpt-4o", USAGE),
        (None, USAGE),
        ("deepseek-flash", None),
        ("deepseek-flash", {"prompt_tokens": "many", "completion_tokens": 1}),
        ("deepseek-flash", {"prompt_tokens": 5}),
        ("deepseek-flash", {"prompt_tokens": -1, "completion_tokens": 1}),
    ],
)
def test_unpriced_or_malformed_is_none(table: PriceTable, model: str | None, usage: object) -> None:
    assert table.cost(model, usage, utc(*MONDAY, 12)) is None


def test_a_one_token_cost_is_kept_exactly_in_the_record(table: PriceTable) -> None:
    usage = {"prompt_tokens": 1, "prompt_cache_hit_tokens": 1, "completion_tokens": 0}
    cost = table.cost("deepseek-flash", usage, utc(*SATURDAY, 12))
    assert cost is not None
    assert cost.record["usd"] == 3e-9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id = 'x'\n", "lists no models"),
        ("models = {}\n", "needs an `id`"),
        ("id = 'x'\ncurrency = 'EUR'\n[models.m]\n", "only USD"),
        ("id = 'x'\n[models.m]\noff_peak = {input_cache_hit = 1}\n", "off_peak.input_cache_miss"),
        (
            "id = 'x'\n[peak]\nhours_utc = ['10:00-06:00']\n",
            "must start before it ends",
        ),
        ("id = 'x'\n[peak]\nweekdays = [0]\n", "ISO weekdays"),
        ("id = [", "is not valid TOML"),
    ],
)
def test_a_broken_table_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        PriceTable.load(path)
    assert info.value.variable == "SECURE_DS_PRICING"


def test_a_missing_table_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        PriceTable.load(tmp_path / "none.toml")


def test_prices_are_read_exactly(table: PriceTable) -> None:
    flash = table.models["deepseek-flash"]
    assert flash["off_peak"].input_cache_miss == Decimal("0.15")
    assert flash["peak"].output == Decimal("1.20")
    assert table.id == "deepseek-2026-11"
