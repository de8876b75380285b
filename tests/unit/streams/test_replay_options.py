import pytest
from pydantic import ValidationError

from streamrec.streams.replay import ReplayOptions


def test_pacing_needs_its_number():
    with pytest.raises(ValidationError, match="needs rate"):
        ReplayOptions(pacing="rate")
    with pytest.raises(ValidationError, match="needs speedup"):
        ReplayOptions(pacing="speedup")
    assert ReplayOptions(pacing="rate", rate=100).rate == 100


def test_rate_must_be_positive():
    with pytest.raises(ValidationError):
        ReplayOptions(pacing="rate", rate=0)
