"""The scan cache: a resent text costs a hash, never a different answer, never the text."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from secure_ds.dlp import ScanCache, Scanner, ScanResult, default_scanner

CORPUS = Path(__file__).parent / "corpus" / "labelled.jsonl"


class CountingScanner(Scanner):
    """The default detectors, counting the texts actually scanned."""

    def __init__(self) -> None:
        super().__init__()
        self.scanned: list[str] = []

    def scan(self, text: str) -> ScanResult:
        self.scanned.append(text)
        return super().scan(text)


def _documents() -> list[str]:
    with CORPUS.open(encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    return list(dict.fromkeys(texts))[:120]  # the generated corpus repeats a few


def test_a_resent_text_is_answered_from_the_cache_with_the_scanners_result() -> None:
    scanner = CountingScanner()
    cache = ScanCache(scanner, min_chars=0)
    texts = _documents()
    first = [cache.scan(t) for t in texts]
    assert len(scanner.scanned) == len(texts)
    assert cache.misses == len(texts)
    again = [cache.scan(t) for t in texts]
    assert len(scanner.scanned) == len(texts)  # nothing scanned twice
    assert cache.hits == len(texts)
    assert again == first == [default_scanner().scan(t) for t in texts]


def test_texts_that_differ_in_one_character_are_scanned_apart() -> None:
    scanner = CountingScanner()
    cache = ScanCache(scanner, min_chars=0)
    base = "write to jane.doe@example.com about the invoice " * 8
    with_card = base + "card 4111 1111 1111 1111"
    without = base + "card 4111 1111 1111 1112"  # fails Luhn
    assert [f.kind for f in cache.scan(with_card).findings] == ["email"] * 8 + ["credit_card"]
    assert [f.kind for f in cache.scan(without).findings] == ["email"] * 8
    assert len(scanner.scanned) == 2


def test_short_texts_and_a_zero_size_cache_always_scan() -> None:
    scanner = CountingScanner()
    short = ScanCache(scanner)  # min_chars=32
    for _ in range(3):
        short.scan("mail jane.doe@example.com")  # 25 characters
    assert len(scanner.scanned) == 3
    assert len(short) == 0
    off = ScanCache(scanner, max_entries=0)
    long_text = "x " * 400
    for _ in range(3):
        off.scan(long_text)
    assert len(scanner.scanned) == 6
    assert len(off) == 0
    with pytest.raises(ValueError, match="zero or more"):
        ScanCache(scanner, max_entries=-1)


def test_the_least_recently_used_result_is_dropped_first() -> None:
    scanner = CountingScanner()
    cache = ScanCache(scanner, max_entries=2, min_chars=0)
    a, b, c = ("a " * 200, "b " * 200, "c " * 200)
    cache.scan(a)
    cache.scan(b)
    cache.scan(a)  # a is now the most recent
    cache.scan(c)  # drops b
    assert len(cache) == 2
    scanner.scanned.clear()
    cache.scan(a)
    cache.scan(c)
    assert scanner.scanned == []
    cache.scan(b)
    assert scanner.scanned == [b]


def test_the_cache_holds_keyed_digests_never_the_text() -> None:
    secret_text = "the password is Xq7#mZ2!vL9p and the card 4111 1111 1111 1111 " * 5
    one, two = ScanCache(default_scanner()), ScanCache(default_scanner())
    one.scan(secret_text)
    two.scan(secret_text)
    ((key_one, result),) = one._results.items()
    ((key_two, _),) = two._results.items()
    assert len(key_one) == 16
    assert key_one != key_two
    assert b"Xq7" not in key_one
    assert "Xq7" not in repr(result)
    assert "4111" not in repr(result)


def test_text_with_lone_surrogates_is_cached_too() -> None:
    scanner = CountingScanner()
    cache = ScanCache(scanner, min_chars=0)
    odd = "mail jane.doe@example.com \ud800 " * 20
    assert cache.scan(odd) == cache.scan(odd) == default_scanner().scan(odd)
    assert len(scanner.scanned) == 1


def test_threads_sharing_a_cache_get_the_scanners_answers() -> None:
    cache = ScanCache(default_scanner(), max_entries=64, min_chars=0)
    texts = _documents()[:80]
    expected = [default_scanner().scan(t) for t in texts]
    wrong: list[int] = []

    def work(offset: int) -> None:
        for k in range(len(texts) * 2):
            i = (k + offset) % len(texts)
            if cache.scan(texts[i]) != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert len(cache) <= 64


def test_the_cache_size_comes_from_the_environment_and_bad_values_are_named(
    tmp_path: Path,
) -> None:
    from secure_ds import ConfigError, Settings

    env = {
        "SECURE_DS_TOKEN_PROVIDER": "api-key",
        "DEEPSEEK_API_KEY": "sk-test",
        "SECURE_DS_AUDIT_PATH": str(tmp_path / "audit.jsonl"),
    }
    assert Settings.from_env(env).dlp_cache == 4096
    assert Settings.from_env({**env, "SECURE_DS_DLP_CACHE": "0"}).dlp_cache == 0
    for bad, text in (("-1", "outside"), ("many", "integer")):
        with pytest.raises(ConfigError, match=text) as info:
            Settings.from_env({**env, "SECURE_DS_DLP_CACHE": bad})
        assert info.value.variable == "SECURE_DS_DLP_CACHE"


def test_the_findings_held_are_bounded_too() -> None:
    # a pasted log full of addresses makes a large result; the cache holds at most
    # max_findings findings in all, dropping the least recently used results first
    cache = ScanCache(default_scanner(), max_findings=25, min_chars=0)
    lines = ["\n".join(f"host{k} 10.{n}.{k}.7 answered" for k in range(10)) for n in range(4)]
    for text in lines[:2]:
        assert len(cache.scan(text).findings) == 10
    assert len(cache) == 2
    cache.scan(lines[2])  # 30 findings would be held: the oldest result goes
    assert len(cache) == 2
    assert cache._held == 20
    huge = "\n".join(f"10.9.{k}.1" for k in range(40))
    assert len(cache.scan(huge).findings) == 40  # more than the bound: not kept
    assert len(cache) == 2
    assert cache._held == 20
    cache.scan(lines[0])  # dropped earlier: scanned again
    assert cache.misses == 5
