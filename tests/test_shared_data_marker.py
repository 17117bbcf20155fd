"""The `shared_data` marker and fixture: skipped without the data, failed when CI requires it."""

import pathlib

import pytest

CONFTEST = pathlib.Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")


@pytest.fixture
def suite(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    shared_data: needs the data\n")
    pytester.makepyfile(
        "def test_uses_data(shared_data):\n    assert shared_data.is_dir()\n\n"
        "def test_without_data():\n    pass\n"
    )
    monkeypatch.setenv("SSL_KERAS_DATA", str(pytester.path / "missing"))
    monkeypatch.delenv("SSL_KERAS_REQUIRE_DATA", raising=False)
    return pytester


def test_a_test_using_missing_data_is_skipped_by_default(suite):
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=1)


def test_it_fails_when_the_data_is_required(suite, monkeypatch):
    monkeypatch.setenv("SSL_KERAS_REQUIRE_DATA", "1")
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*SSL_KERAS_REQUIRE_DATA=1: the real-data tests must run*"])


def test_every_test_using_the_fixture_is_marked(suite):
    suite.runpytest("-p", "no:cacheprovider", "-m", "not shared_data").assert_outcomes(
        passed=1, deselected=1
    )


def test_the_data_present_is_passed_to_the_test(suite, monkeypatch):
    (suite.path / "data").mkdir()
    monkeypatch.setenv("SSL_KERAS_DATA", str(suite.path / "data"))
    monkeypatch.setenv("SSL_KERAS_REQUIRE_DATA", "1")
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
