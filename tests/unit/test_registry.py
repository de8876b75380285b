import fcntl

import pytest

from streamrec.infra.settings import Settings
from streamrec.models.registry import Manifest, ModelRegistry, RegistryError


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry(Settings().with_overrides(stack={"state_dir": tmp_path}))


def _publish(registry, version):
    staging = registry.new_version_dir("ranker", version)
    (staging / "weights.bin").write_bytes(version.encode())
    return registry.publish("ranker", staging, Manifest(kind="ranker", version=version))


def test_promote_and_rollback(registry):
    _publish(registry, "v1")
    _publish(registry, "v2")
    assert registry.promoted("ranker") is None
    assert registry.promote("ranker", "v1").version == "v1"
    assert registry.promote("ranker", "v2").action == "promote"
    assert registry.promoted("ranker").version == "v2"
    change = registry.rollback("ranker")
    assert (change.version, change.action) == ("v1", "rollback")
    assert registry.promoted("ranker").version == "v1"
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback("ranker")
    assert [v.version for v in registry.list("ranker")] == ["v1", "v2"]


def test_a_corrupted_version_cannot_be_promoted(registry):
    v = _publish(registry, "v1")
    (v.path / "weights.bin").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="checksum"):
        registry.promote("ranker", "v1")


def test_unknown_version(registry):
    with pytest.raises(RegistryError, match="no ranker version v9"):
        registry.promote("ranker", "v9")


def test_one_training_at_a_time_holds_the_registry_lock_until_it_ends(registry):
    def try_lock() -> bool:
        with open(registry.root / ".train.lock", "a") as other:  # another open: another holder
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    with registry.training_lock():
        assert not try_lock()
    assert try_lock()
