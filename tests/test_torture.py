"""The CI-size torture: 5,000 users, 10 SIGKILLs mid-run, resumed until done, checked exactly."""

from __future__ import annotations

import pytest

from benchmarks.torture import torture

pytestmark = pytest.mark.slow


def test_ten_sigkills_over_5000_users_end_exact(tmp_path):
    result = torture(5000, 10, seed=12, rate_limit=450, workdir=tmp_path)
    assert result["kills_mid_run"] == 10
    assert result["in_scope"] > 4800
    assert result["problems"] == []
