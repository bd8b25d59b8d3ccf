"""Settings: parsing from the environment, and every bad value refused with a clear error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secure_ds import ConfigError, Secret, Settings
from secure_ds.sandbox import LocalCA


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a valid client cert/key, an issuer key, and some bad files."""
    root = tmp_path_factory.mktemp("pki")
    ca = LocalCA.create("test CA")
    (root / "ca.pem").write_bytes(ca.cert_pem)
    cert, key = ca.issue_client_cert("alice")
    (root / "client.pem").write_bytes(cert)
    (root / "client-key.pem").write_bytes(key)
    _, other_key = ca.issue_client_cert("bob")
    (root / "other-key.pem").write_bytes(other_key)
    now = datetime.now(UTC)
    expired, expired_key = ca.issue_client_cert(
        "old", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    (root / "expired.pem").write_bytes(expired)
    (root / "expired-key.pem").write_bytes(expired_key)
    future, future_key = ca.issue_client_cert(
        "new", not_before=now + timedelta(days=1), not_after=now + timedelta(days=10)
    )
    (root / "future.pem").write_bytes(future)
    (root / "future-key.pem").write_bytes(future_key)
    issuer = ec.generate_private_key(ec.SECP256R1())
    (root / "issuer.pem").write_bytes(
        issuer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "rsa.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (root / "garbage.pem").write_text("not a pem file\n")
    return {p.stem: p for p in root.iterdir()}


def _env(material: dict[str, Path], tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "SECURE_DS_CLIENT_CERT": str(material["client"]),
        "SECURE_DS_CLIENT_KEY": str(material["client-key"]),
        "SECURE_DS_CA_BUNDLE": str(material["ca"]),
        "SECURE_DS_ISSUER_KEY": str(material["issuer"]),
        "SECURE_DS_AUDIT_PATH": str(tmp_path / "audit.jsonl"),
    }
    env.update(extra)
    return env


def test_defaults_and_environment_parsing(material: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings.from_env(
        _env(
            material,
            tmp_path,
            DEEPSEEK_MODEL="deepseek-flash@2026-10-17",
            DEEPSEEK_MAX_TOKENS="2048",
            DEEPSEEK_TEMPERATURE="0.7",
            DEEPSEEK_TOP_P="0.9",
            DEEPSEEK_FREQUENCY_PENALTY="-0.5",
            DEEPSEEK_API_VERSION="v1",
            AI_PROVIDER="deepseek",
            SECURE_DS_ROLES="engineer, oncall",
            SECURE_DS_ATTRIBUTES='{"department": "platform"}',
            SECURE_DS_AUDIT_FSYNC="always",
        )
    )
    assert settings.endpoint == "https://api.deepseek.com"
    assert settings.base_url == "https://api.deepseek.com/v1"
    assert settings.model_name == "deepseek-flash"
    assert settings.model_pin == "2026-10-17"
    assert settings.max_tokens == 2048
    assert settings.temperature == 0.7
    assert settings.frequency_penalty == -0.5
    assert settings.roles == ("engineer", "oncall")
    assert settings.attributes == {"department": "platform"}
    assert settings.audit_fsync == "always"
    assert settings.effective_audience == "https://api.deepseek.com"
    assert settings.max_attempts == 5
    assert settings.backoff_factor == 0.3
    assert settings.breaker_threshold == 3
    assert settings.breaker_cooldown == 300.0
    assert settings.connect_timeout == 3.05
    assert settings.read_timeout == 30.0
    assert settings.tls_min_version == "1.3"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DEEPSEEK_TEMPERATURE", "2.5", "[0, 2]"),
        ("DEEPSEEK_TEMPERATURE", "-0.1", "[0, 2]"),
        ("DEEPSEEK_TEMPERATURE", "warm", "not a number"),
        ("DEEPSEEK_TOP_P", "0", "greater than 0"),
        ("DEEPSEEK_TOP_P", "1.5", "[0, 1]"),
        ("DEEPSEEK_FREQUENCY_PENALTY", "3", "[-2, 2]"),
        ("DEEPSEEK_MAX_TOKENS", "0", "[1, 1e+06]"),
        ("DEEPSEEK_MAX_TOKENS", "lots", "not an integer"),
        ("DEEPSEEK_MODEL", "deepseek flash", "not a model name"),
        ("DEEPSEEK_API_VERSION", "latest", "not an API version"),
        ("DEEPSEEK_ENDPOINT", "http://api.deepseek.com", "plain http"),
        ("DEEPSEEK_ENDPOINT", "ftp://api.deepseek.com", "not an http(s) URL"),
        ("DEEPSEEK_ENDPOINT", "https://user:pw@api.deepseek.com", "credentials"),
        ("DEEPSEEK_ENDPOINT", "https://api.deepseek.com/?key=sk-1", "without credentials"),
        ("AI_PROVIDER", "openai", "unsupported provider"),
        ("SECURE_DS_TLS_MIN_VERSION", "1.1", "not allowed"),
        ("SECURE_DS_TOKEN_PROVIDER", "magic", "unknown token provider"),
        ("SECURE_DS_SPKI_PIN", "abc", "SPKI pin"),
        ("SECURE_DS_ATTRIBUTES", "{not json", "not valid JSON"),
        ("SECURE_DS_ATTRIBUTES", "[1, 2]", "JSON object"),
        ("SECURE_DS_TOKEN_TTL", "86400", "[30, 3600]"),
        ("SECURE_DS_MAX_ATTEMPTS", "0", "[1, 10]"),
        ("SECURE_DS_AUDIT_FSYNC", "maybe", "not an fsync policy"),
        ("SECURE_DS_METER_BACKEND", "etcd", "not a meter backend"),
        ("SECURE_DS_POLICY_RELOAD", "-1", "[0, 3600]"),
    ],
)
def test_bad_values_name_the_variable(
    material: dict[str, Path], tmp_path: Path, variable: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(_env(material, tmp_path, **{variable: value}))
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}:")
    assert says in str(info.value)
    assert info.value.hint  # every error says what to do


def test_a_sqlite_meter_needs_its_database(material: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SECURE_DS_METER_BACKEND=sqlite keeps") as info:
        Settings.from_env(_env(material, tmp_path, SECURE_DS_METER_BACKEND="sqlite"))
    assert info.value.variable == "SECURE_DS_METER_DB"


def test_a_redis_meter_needs_a_redis_url_and_never_shows_it(
    material: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="SECURE_DS_METER_BACKEND=redis keeps") as info:
        Settings.from_env(_env(material, tmp_path, SECURE_DS_METER_BACKEND="redis"))
    assert info.value.variable == "SECURE_DS_METER_REDIS_URL"
    bad = "http://:hunter2-secret@redis.internal:6379/0"
    with pytest.raises(ConfigError, match="not a redis:// or rediss:// URL") as info:
        Settings.from_env(
            _env(
                material,
                tmp_path,
                SECURE_DS_METER_BACKEND="redis",
                SECURE_DS_METER_REDIS_URL=bad,
            )
        )
    assert "hunter2" not in str(info.value)
    good = "rediss://:hunter2-secret@redis.internal:6379/0"
    settings = Settings.from_env(
        _env(material, tmp_path, SECURE_DS_METER_BACKEND="redis", SECURE_DS_METER_REDIS_URL=good)
    )
    assert settings.meter_redis_url is not None
    assert settings.meter_redis_url.reveal() == good
    assert "hunter2" not in repr(settings)  # held as a Secret


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"]
)
def test_plain_http_is_allowed_only_on_loopback(
    material: dict[str, Path], tmp_path: Path, endpoint: str
) -> None:
    settings = Settings.from_env(_env(material, tmp_path, DEEPSEEK_ENDPOINT=endpoint))
    assert settings.endpoint == endpoint


@pytest.mark.parametrize(
    ("overrides", "variable", "says"),
    [
        ({"SECURE_DS_CLIENT_KEY": "/nonexistent/key.pem"}, "SECURE_DS_CLIENT_KEY", "cannot read"),
        ({"SECURE_DS_CLIENT_CERT": "garbage"}, "SECURE_DS_CLIENT_CERT", "no PEM certificate"),
        (
            {"SECURE_DS_CLIENT_CERT": "expired", "SECURE_DS_CLIENT_KEY": "expired-key"},
            "SECURE_DS_CLIENT_CERT",
            "expired on",
        ),
        (
            {"SECURE_DS_CLIENT_CERT": "future", "SECURE_DS_CLIENT_KEY": "future-key"},
            "SECURE_DS_CLIENT_CERT",
            "not valid until",
        ),
        ({"SECURE_DS_CLIENT_KEY": "other-key"}, "SECURE_DS_CLIENT_KEY", "does not belong"),
        ({"SECURE_DS_CA_BUNDLE": "garbage"}, "SECURE_DS_CA_BUNDLE", "no PEM certificate"),
        ({"SECURE_DS_ISSUER_KEY": "rsa"}, "SECURE_DS_ISSUER_KEY", "not supported"),
        ({"SECURE_DS_ISSUER_KEY": "garbage"}, "SECURE_DS_ISSUER_KEY", "no usable PEM"),
    ],
)
def test_bad_files_are_refused(
    material: dict[str, Path],
    tmp_path: Path,
    overrides: dict[str, str],
    variable: str,
    says: str,
) -> None:
    env = _env(material, tmp_path)
    for key, name in overrides.items():
        env[key] = str(material.get(name, Path(name)))
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert says in str(info.value)


def test_half_a_key_pair_is_refused(material: dict[str, Path], tmp_path: Path) -> None:
    env = _env(material, tmp_path)
    del env["SECURE_DS_CLIENT_KEY"]
    with pytest.raises(ConfigError, match="SECURE_DS_CLIENT_KEY: is not set, but its partner is"):
        Settings.from_env(env)


def test_embedded_issuer_needs_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SECURE_DS_AUDIT_PATH": str(tmp_path / "a.jsonl")})
    assert info.value.variable == "SECURE_DS_CLIENT_CERT"
    assert "SECURE_DS_TOKEN_PROVIDER=api-key" in str(info.value)


def test_api_key_mode_needs_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SECURE_DS_TOKEN_PROVIDER": "api-key"})
    assert info.value.variable == "DEEPSEEK_API_KEY"
    settings = Settings.from_env(
        {"SECURE_DS_TOKEN_PROVIDER": "api-key", "DEEPSEEK_API_KEY": "sk-test-value"}
    )
    assert settings.api_key == Secret("sk-test-value")


def test_encrypted_client_key(material: dict[str, Path], tmp_path: Path) -> None:
    ca = LocalCA.create("enc CA")
    cert, key_pem = ca.issue_client_cert("enc")
    key = serialization.load_pem_private_key(key_pem, None)
    encrypted = key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"open sesame"),
    )
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(encrypted)
    env = _env(
        material,
        tmp_path,
        SECURE_DS_CLIENT_CERT=str(tmp_path / "c.pem"),
        SECURE_DS_CLIENT_KEY=str(tmp_path / "k.pem"),
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        Settings.from_env(env)
    with pytest.raises(ConfigError, match="passphrase is wrong"):
        Settings.from_env({**env, "SECURE_DS_CLIENT_KEY_PASSWORD": "wrong"})
    settings = Settings.from_env({**env, "SECURE_DS_CLIENT_KEY_PASSWORD": "open sesame"})
    assert "open sesame" not in repr(settings)


def test_repr_masks_secrets(material: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings.from_env(
        _env(material, tmp_path, DEEPSEEK_API_KEY="sk-live-canary-0123456789")
    )
    for text in (repr(settings), str(settings), f"{settings}", f"{settings.api_key}"):
        assert "sk-live-canary" not in text
    assert "Secret('**********')" in repr(settings)


def test_keyword_construction_validates_too(material: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(
            client_cert=material["client"],
            client_key=material["client-key"],
            issuer_key=material["issuer"],
            temperature=7,
        )
    assert info.value.variable == "DEEPSEEK_TEMPERATURE"


def test_overrides_win_over_environment(material: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings.from_env(
        _env(material, tmp_path, DEEPSEEK_MODEL="deepseek-flash"), model="deepseek-v4-pro"
    )
    assert settings.model == "deepseek-v4-pro"
