"""Progress on stderr (progress.py): in a log, one line per update and nothing repeated at the end."""

from __future__ import annotations

from directer.progress import progress_bar


def test_a_log_gets_one_line_per_update(capsys):
    assert progress_bar(3, enabled=False) is None
    bar = progress_bar(3, desc="static:alpha=3", initial=1)  # captured stderr is no terminal
    bar.update(1)
    bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["directer: 2/3 prompts done", "directer: 3/3 prompts done"]
    assert all("(static:alpha=3, " in line for line in lines)
