"""The README's headline is generated from the committed results and must stay equal to them."""

import re
from pathlib import Path

from vitlib import findings
from vitlib.headline import readme_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_readme_headline_equals_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    committed = {p.parent.name: findings.load(p) for p in sorted((ROOT / "report").glob("*/results.json"))}
    assert "seed" in committed, "report/seed/results.json is committed with the report"
    for name, body in readme_blocks(committed).items():
        block = re.search(rf"<!-- {re.escape(name)} .*?-->\n(.*?)\n<!-- /{re.escape(name)} -->", readme, re.S)
        assert block, f"README.md has no block {name}"
        assert block.group(1) == body, f"README.md's {name} block is stale: run `make readme`"
