"""The SQL in the README works on a store the t9k example script filled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runstore.query import run_query
from runstore.store import Store
from tests.runstore.helpers import run_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    home = tmp_path_factory.mktemp("readme") / "home"
    example = (ROOT / "examples" / "train_t9k.py").read_text()
    for lr in ("0.5", "0.0005", "0.0001"):
        run_script(example.replace("default=0.1", f"default={lr}"), home)
    return Store(home)


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


def test_readme_sql_answers_the_question(demo_store: Store):
    blocks = sql_blocks((ROOT / "README.md").read_text())
    assert blocks
    for sql in blocks:
        result = run_query(demo_store, sql)
        assert result.rows, sql
    best = run_query(demo_store, blocks[0]).rows[0]
    assert best[1] < 1e-3  # the lr filter held


def test_example_script_fills_every_part_of_the_schema(demo_store: Store):
    counts = {t: demo_store.read(f"SELECT COUNT(*) FROM {t}")[0][0]
              for t in ("runs", "metrics", "artifacts", "artifact_objects", "associations",
                        "sync_state")}
    assert counts["runs"] == 3 and counts["sync_state"] == 3
    assert counts["artifacts"] == 6 and counts["associations"] == 6
    # 5 epochs x 63 batches: a train point every 10 steps (2 keys), val per epoch, test once
    assert counts["metrics"] == 3 * (31 * 2 + 5 + 1)
    statuses = {r[0] for r in demo_store.read("SELECT status FROM runs")}
    assert statuses == {"Complete"}
