"""A fast sample of benchmarks/bad_input.py (the full run is `python -m benchmarks.bad_input`): bad CSVs, images, zips
and URL parameters for every page get a specific message, never an uncaught exception, a traceback or Markdown made of
the input, within bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bad_input as B

SAMPLE = 6  # every 6th case of each category: about 80 cases, 20-40 s here


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No downloads; the default limits."""
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    for key in ("MAX_UPLOAD_MB", "MAX_ARCHIVE_MB", "MAX_ARCHIVE_FILES", "MAX_CSV_ROWS", "DATA_ROOTS"):
        monkeypatch.delenv(f"EXPLORER_{key}", raising=False)


def test_the_generator_makes_over_300_cases_of_every_kind(tmp_path: Path) -> None:
    cases = B.all_cases(tmp_path)
    counts = {c: sum(case.category == c for case in cases) for c in B.CATEGORIES}
    assert len(cases) >= 300 and min(counts.values()) >= 40, counts
    from views.registry import LABS

    assert set(B.page_schemas()) == {p.slug for p in LABS}  # every registered page's URL settings are attacked


def test_a_sample_of_bad_input_gets_specific_messages_in_bounded_memory() -> None:
    results = B.run(sample=SAMPLE)
    print("\n" + B.summary(results))
    assert {r.case.category for r in results} == set(B.CATEGORIES)
    failed = [f"{r.case.category} {r.case.name}: {r.message}" for r in results if not r.ok]
    assert not failed, failed
    assert max(r.peak_mb for r in results) < B.MAX_CASE_MB
    long = [r.case.name for r in results if r.long and r.case.category != "url"]
    assert not long, long  # the data parsers quote at most a short part of the input
    refused = [r for r in results if r.message.startswith("refused")]
    assert len(refused) > len(results) / 2 and all(len(r.message) > len("refused: ") + 20 for r in refused)
