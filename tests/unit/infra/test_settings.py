import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streamrec.errors import ConfigError
from streamrec.infra.settings import (
    AnalyticsSettings,
    LLMSettings,
    Settings,
    SettingsError,
    environment,
    redact_url,
)


def test_environment_with_prefix_and_nested_sections(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("STREAMREC_STACK__REDIS_PORT", "7000")
    s = Settings()
    assert s.kafka_bootstrap == "broker:9092"
    assert s.redis_url.endswith(":7000/0")


def test_defaults_point_at_the_local_stack():
    s = Settings()
    assert s.kafka_bootstrap == f"127.0.0.1:{s.stack.kafka_port}"
    assert s.clickhouse_dsn.startswith("chdb://")


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError):
        Settings(stack={"state_dirr": "/tmp/x"})


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.stack.redis_port = 1  # type: ignore[misc]


def test_to_env_rebuilds_the_same_settings(monkeypatch):
    s = Settings().with_overrides(
        stack={"state_dir": Path("/tmp/sr"), "kafka_port": 12345}, llm={"api_key": "sk-secret"}
    )
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings()
    assert rebuilt.stack.kafka_port == 12345
    assert rebuilt.stack.state_dir == Path("/tmp/sr")
    assert rebuilt.llm.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(rebuilt)
    # Every field, lists and mappings too (read back as JSON), not only the scalars above.
    assert rebuilt.model_dump() == s.model_dump()


# --- unknown names stop start-up, with the closest valid one ---------------------------------


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("STREAMREC_SERVNG__PORT", "STREAMREC_SERVING__PORT"),  # a section's typo
        ("STREAMREC_SERVING__PROT", "STREAMREC_SERVING__PORT"),  # a field's typo
        ("STREAMREC_KAFKA__BOOTSTRAP__HOST", "STREAMREC_KAFKA__BOOTSTRAP"),  # too deep
        ("STREAMREC_KAFKA_BOOTSTRAP", "STREAMREC_KAFKA__BOOTSTRAP"),  # one underscore
        ("streamrec_redis__socket_timeout", "STREAMREC_REDIS__SOCKET_TIMEOUT_S"),  # any case
        ("STREAMREC_SERVING", "STREAMREC_SERVING__PORT"),  # a section is set field by field
    ],
)
def test_an_unknown_variable_stops_start_up_naming_the_closest(monkeypatch, variable, closest):
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert isinstance(caught.value, SettingsError)
    assert variable in str(caught.value)
    assert f"did you mean {closest}?" in str(caught.value)


def test_an_unknown_top_level_variable_stops_start_up(monkeypatch):
    monkeypatch.setenv("STREAMREC_TYPO", "1")
    monkeypatch.setenv("STREAMREC_SERVING__PORT", "1")  # a valid one beside it is not reported
    with pytest.raises(SettingsError, match=r"STREAMREC_TYPO \(did you mean STREAMREC_") as c:
        Settings()
    assert "SERVING__PORT" not in str(c.value)


def test_every_unknown_variable_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("STREAMREC_SERVNG__PORT", "1")
    monkeypatch.setenv("STREAMREC_LLM__API_KYE", "sk-1")
    with pytest.raises(SettingsError) as caught:
        Settings()
    assert "STREAMREC_SERVNG__PORT" in str(caught.value)
    assert "STREAMREC_LLM__API_KYE (did you mean STREAMREC_LLM__API_KEY?)" in str(caught.value)


def test_any_case_of_a_valid_name_is_accepted_as_pydantic_settings_reads_it(monkeypatch):
    monkeypatch.setenv("streamrec_serving__port", "18123")
    assert Settings().serving.port == 18123


def test_a_bad_value_in_the_environment_names_the_variable_but_not_the_value(monkeypatch):
    monkeypatch.setenv("STREAMREC_SERVING__PORT", "not-a-port-x7q")
    with pytest.raises(SettingsError, match="STREAMREC_SERVING__PORT") as caught:
        Settings()
    assert "x7q" not in str(caught.value)


def test_every_variable_the_platform_sets_for_children_is_valid():
    env = Settings().with_overrides(faults={"sink_exit_after_insert": 1}).to_env()
    assert set(env) <= set(environment.valid_names(Settings))
    assert "STREAMREC_FAULTS__SINK_EXIT_AFTER_INSERT" in env


# Files that name unknown variables on purpose: the tests of the check itself, and the
# launcher's tests, whose children run plain Python (no Settings) and only echo a marker.
_DELIBERATELY_UNKNOWN = {
    "tests/unit/infra/test_settings.py",
    "tests/unit/cli/test_config_command.py",
    "tests/unit/infra/test_child_process.py",
    "tests/unit/infra/test_settings_secrets.py",
}
_SCANNED = (".py", ".md", ".sh", ".yml", ".yaml", ".toml", ".cfg", ".ini", ".env", "Makefile")


def test_every_streamrec_variable_named_in_code_scripts_and_docs_is_valid():
    """Tests, scripts, compose files and docs that set a variable would now stop start-up if
    it were unknown. ADRs are history and may name settings since renamed."""
    root = Path(__file__).resolve().parents[3]
    skip = {".git", ".venv", "build", "node_modules", ".ruff_cache", "adr"}
    valid = set(environment.valid_names(Settings))
    found: dict[str, str] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if skip & set(rel.parts) or rel.as_posix() in _DELIBERATELY_UNKNOWN:
            continue
        if path.is_file() and path.name.endswith(_SCANNED) and "egg-info" not in str(rel):
            for name in re.findall(r"STREAMREC_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")):
                found.setdefault(name, rel.as_posix())
    assert found, "the scan found no variable at all"
    sections = {f"STREAMREC_{s.upper()}" for s in Settings.model_fields}  # "STREAMREC_LLM__*"
    bad = {n: where for n, where in found.items() if n not in valid | sections}
    assert not bad


# --- with_overrides validates like the environment -------------------------------------------


def test_overrides_are_validated_so_a_secret_becomes_secret():
    s = Settings().with_overrides(llm={"api_key": "sk-overridden"}, serving={"port": "18001"})
    assert isinstance(s.llm.api_key, SecretStr)
    assert s.llm.api_key.get_secret_value() == "sk-overridden"
    assert "sk-overridden" not in repr(s) and "sk-overridden" not in str(s)
    assert s.serving.port == 18001  # coerced as the environment's "18001" would be


def test_an_override_of_a_wrong_type_or_out_of_range_is_refused():
    with pytest.raises(SettingsError, match=r"serving\.port"):
        Settings().with_overrides(serving={"port": "not-a-port"})
    with pytest.raises(SettingsError, match=r"index\.kind"):
        Settings().with_overrides(index={"kind": "annoy"})
    with pytest.raises(SettingsError, match=r"embedding\.max_wait_ms"):
        Settings().with_overrides(embedding={"max_wait_ms": 0})


def test_an_unknown_override_names_the_closest_section_or_field():
    with pytest.raises(SettingsError, match=r"serving\.prot \(did you mean serving\.port\?\)"):
        Settings().with_overrides(serving={"prot": 1})
    with pytest.raises(SettingsError, match=r"servng \(did you mean serving\?\)"):
        Settings().with_overrides(servng={"port": 1})


def test_overrides_keep_the_other_fields_and_do_not_reread_the_environment(monkeypatch):
    base = Settings().with_overrides(serving={"port": 18005})
    monkeypatch.setenv("STREAMREC_SERVING__HOST", "0.0.0.0")
    copy = base.with_overrides(serving={"workers": 2})
    assert (copy.serving.port, copy.serving.workers, copy.serving.host) == (18005, 2, "127.0.0.1")


def test_overrides_accept_a_validated_section():
    s = Settings().with_overrides(llm=LLMSettings(api_key=SecretStr("sk-2"), burst=7))
    assert s.llm.burst == 7 and s.llm.api_key.get_secret_value() == "sk-2"


# --- secrets ---------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"(api_key|password|passwd|token|secret|credential|dsn)$")


def test_every_credential_is_a_secret():
    secrets = {
        f"{section}.{name}"
        for section, model in environment.field_tree(Settings).items()
        for name, info in model.model_fields.items()
        if info.annotation is SecretStr
    }
    named = {
        f"{section}.{name}"
        for section, model in environment.field_tree(Settings).items()
        for name in model.model_fields
        if _SECRET_NAME.search(name)
    }
    assert named <= secrets
    # URLs that carry a password (redis://:pw@host, http://user:pw@clickhouse) are secrets too.
    assert {"redis.url", "clickhouse.dsn", "llm.api_key", "llm.local_api_key"} <= secrets


def test_secrets_from_the_environment_are_masked_but_used(monkeypatch):
    monkeypatch.setenv("STREAMREC_REDIS__URL", "redis://:pw-r3d1s@cache:6380/2")
    monkeypatch.setenv("STREAMREC_CLICKHOUSE__DSN", "http://app:pw-ch0use@ch:8123/?token=tk-9")
    monkeypatch.setenv("STREAMREC_LLM__API_KEY", "sk-4p1")
    s = Settings()
    shown = " ".join(f"{k}={v}" for k, v in s.printable().items())
    for text in (repr(s), str(s), shown, s.model_dump_json()):
        assert not {"pw-r3d1s", "pw-ch0use", "tk-9", "sk-4p1"} & set(re.split(r"[\s:@/?=',]", text))
    assert "STREAMREC_REDIS__URL=redis://:**********@cache:6380/2" in shown
    assert "STREAMREC_CLICKHOUSE__DSN=http://app:**********@ch:8123/?**********" in shown
    assert "STREAMREC_LLM__API_KEY=**********" in shown
    assert s.redis_url == "redis://:pw-r3d1s@cache:6380/2"  # what the client connects with
    assert s.clickhouse_dsn == "http://app:pw-ch0use@ch:8123/?token=tk-9"


def test_printable_changed_only_lists_what_differs_from_the_defaults():
    s = Settings().with_overrides(kafka={"client_id": "c-1"}, llm={"api_key": "sk-3"})
    assert s.printable(changed_only=True) == {
        "STREAMREC_KAFKA__CLIENT_ID": "c-1",
        "STREAMREC_LLM__API_KEY": "**********",
    }
    assert len(Settings().printable()) == len(environment.valid_names(Settings))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:16379/0", "redis://127.0.0.1:16379/0"),
        ("rediss://default:pw@cache:6380/1", "rediss://default:**********@cache:6380/1"),
        ("redis://:pw@cache/0", "redis://:**********@cache/0"),
        ("http://ch:8123/?password=pw", "http://ch:8123/?**********"),
        ("chdb:///var/lib/streamrec/clickhouse", "**********"),  # no host: masked whole
        ("http://[::1]:8123/", "http://[::1]:8123/"),
        ("not a url", "**********"),
        ("", ""),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


# --- test-only knobs stay out of production ----------------------------------------------------


def test_fault_injection_reaches_a_child_only_when_set():
    assert not [k for k in Settings().to_env() if k.startswith("STREAMREC_FAULTS__")]
    crashing = Settings().with_overrides(faults={"sink_exit_after_insert": 2})
    assert crashing.to_env()["STREAMREC_FAULTS__SINK_EXIT_AFTER_INSERT"] == "2"
    assert "fault" not in " ".join(AnalyticsSettings.model_fields)


def test_the_environment_is_the_only_source_the_name_check_must_cover():
    # The unknown-name check scans os.environ; a dotenv file or a secrets directory would be
    # a second source it does not see.
    assert Settings.model_config.get("env_file") is None
    assert Settings.model_config.get("secrets_dir") is None
