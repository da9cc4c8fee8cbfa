"""Settings: defaults, the TOML file, environment overrides, and clear refusals of bad values."""

from __future__ import annotations

import re

import pytest

from explorer.core import settings as S


def test_defaults_suit_a_shared_server() -> None:
    s = S.load(None, {})
    assert s.max_jobs == 2 and s.data_roots == () and s.require_login is False
    assert s.max_upload_mb <= 10


def test_file_then_environment(tmp_path) -> None:
    f = tmp_path / "explorer.toml"
    f.write_text('max_jobs = 4\nmax_queue = 3\ndata_roots = ["/srv/data"]\n')
    s = S.load(f, {"EXPLORER_MAX_QUEUE": "7", "EXPLORER_REQUIRE_LOGIN": "yes"})
    assert (s.max_jobs, s.max_queue, s.data_roots, s.require_login) == (4, 7, ("/srv/data",), True)
    assert S.load(f, {"EXPLORER_DATA_ROOTS": "/a:/b"}).data_roots == ("/a", "/b")


@pytest.mark.parametrize("env,needle", [({"EXPLORER_MAX_JOBS": "two"}, "max_jobs"),
                                        ({"EXPLORER_MAX_JOBS": "0"}, "max_jobs"),
                                        ({"EXPLORER_ORPHAN_TIMEOUT_S": "-1"}, "orphan_timeout_s"),
                                        ({"EXPLORER_MAX_JOB_S": "nan"}, "max_job_s"),
                                        ({"EXPLORER_REQUIRE_LOGIN": "maybe"}, "require_login")])
def test_bad_values_are_refused_by_name(env, needle) -> None:
    with pytest.raises(S.SettingsError, match=needle):
        S.load(None, env)


def test_unknown_keys_and_broken_files_are_refused(tmp_path) -> None:
    f = tmp_path / "x.toml"
    f.write_text("max_jobz = 3\n")
    with pytest.raises(S.SettingsError, match="max_jobz"):
        S.load(f, {})
    f.write_text("max_jobs = [\n")
    with pytest.raises(S.SettingsError, match="cannot read"):
        S.load(f, {})


def test_current_follows_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("EXPLORER_MAX_QUEUE", "5")
    assert S.current().max_queue == 5
    monkeypatch.setenv("EXPLORER_MAX_QUEUE", "6")
    assert S.current().max_queue == 6


def test_the_example_file_lists_every_key_with_its_default() -> None:
    text = S.EXAMPLE_FILE.read_text()
    assert S.load(S.EXAMPLE_FILE, {}) == S.Settings()
    keys = re.findall(r"^([a-z_]+) =", text, re.M)
    assert keys == list(S.FIELDS)
