"""The examples that tune the user's own code stay what docs/your-code.md says: the HF-style
script is made tunable with a dozen changed lines, and the page's diff is the real one."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def changes() -> tuple[list[str], list[str]]:
    """The non-blank lines added (or changed) and removed from the plain script to the tuned
    one, ignoring the module docstring (the same text, but for one file name)."""
    def code(name: str) -> list[str]:
        text = (ROOT / "examples" / name).read_text()
        return text[text.index('"""', 3) + 3 :].splitlines()

    diff = list(difflib.unified_diff(code("hf_style_plain.py"), code("hf_style.py"), lineterm="", n=0))
    added = [ln[1:] for ln in diff if ln.startswith("+") and not ln.startswith("+++") and ln[1:].strip()]
    removed = [ln[1:] for ln in diff if ln.startswith("-") and not ln.startswith("---") and ln[1:].strip()]
    return added, removed


def test_the_hf_style_script_is_tuned_with_at_most_twelve_changed_lines():
    added, _ = changes()
    assert len(added) <= 12, added


def test_the_docs_show_the_real_diff():
    page = (ROOT / "docs" / "your-code.md").read_text()
    block = re.search(r"```diff\n(.*?)```", page, re.S).group(1).splitlines()
    added, removed = changes()
    shown_added = [ln[1:] for ln in block if ln.startswith("+")]
    shown_removed = [ln[1:] for ln in block if ln.startswith("-")]
    assert shown_added == added and shown_removed == removed
    assert f"with {len(added)} lines added or" in page and f"and {len(removed)} removed" in page
