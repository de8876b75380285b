import pytest

from streamrec.infra.errors import MissingProgramError
from streamrec.infra.programs import missing_programs, require, require_java


def test_missing_program_names_the_package_to_install():
    with pytest.raises(MissingProgramError, match="apt-get install -y redis-server"):
        require("redis-server-that-does-not-exist", "redis-server")


def test_missing_programs_lists_each_with_its_hint():
    problems = missing_programs("no-java-here", "no-mvn-here", "no-redis-here")
    assert len(problems) == 3
    assert any("openjdk-17" in p for p in problems)
    assert any("maven" in p for p in problems)


def test_java_17_or_newer_is_accepted():
    assert require_java("java")  # the machine's Java 17
