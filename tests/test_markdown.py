"""`reconcile plan --markdown` on plans made here: the table, diff blocks, secrets, escaping and the
comment size limit.  No LXD (tests/test_markdown_lxd.py runs it on a real drifted lab)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.markdown import MAX_CHARS, plan_markdown
from reconciler.plan import make_plan, plan_from_json
from reconciler.render import plan_text
from reconciler.spec import Lab


def lab_with(files: dict) -> Lab:
    return Lab.model_validate({"lab": "l", "containers": {"c": {"image": "i", "files": files}}})


def planned(tmp_path: Path, want: dict, have: dict, unchanged: int = 0):
    changes = diff_states(desired_state(lab_with(want), tmp_path, {}, {}), desired_state(lab_with(have), tmp_path, {}, {}))
    return replace(make_plan("l", changes, {}), unchanged=unchanged)


def fences(text: str) -> list[str]:
    """The bodies of the fenced diff blocks."""
    return [m.group(2) for m in re.finditer(r"^(`{3,})diff\n(.*?)\n\1$", text, re.S | re.M)]


def test_a_file_change_is_a_row_and_a_diff_block_with_the_unchanged_collapsed(tmp_path):
    plan = planned(tmp_path, {"/etc/motd": {"content": "hello\nworld\n", "mode": "0600"}, "/srv/new": {"content": "x\n"}},
                   {"/etc/motd": {"content": "hello\nthere\n"}}, unchanged=97)
    text = plan_markdown(plan)
    assert "**1 to create, 1 to update**, and 97 unchanged." in text
    assert "| `~` | update | `file.c:/etc/motd` | differs: content, mode | unknown |" in text  # no record here
    assert "| `+` | create | `file.c:/srv/new` | absent | lab.yaml (your change) |" in text
    assert "<details><summary><code>file.c:/etc/motd</code>: update</summary>" in text
    assert "| | | *and 97 unchanged* | | |" in text
    motd, new = fences(text)
    assert motd.splitlines() == ['-mode: "0644"', '+mode: "0600"', "--- live", "+++ lab.yaml", "@@ -1,2 +1,2 @@",
                                 " hello", "-there", "+world"]
    assert "+x" in new.splitlines()
    assert f"Fingerprint `{plan.fingerprint()}`" in text
    assert "and 97 unchanged." in plan_text(plan)  # the text plan collapses them too


def test_secrets_never_appear_nor_their_digest(tmp_path):
    secret = {"content": "hunter2\n", "secret": True}
    for plan in (planned(tmp_path, {"/etc/key": secret}, {}),
                 planned(tmp_path, {"/etc/key": secret}, {"/etc/key": {"content": "letmein\n", "secret": True}})):
        text = plan_markdown(plan)
        for value in (b"hunter2\n", b"letmein\n"):
            digest = hashlib.sha256(value).hexdigest()
            assert value.decode().strip() not in text and digest[:12] not in text
        assert "(secret" in text


def test_names_and_contents_cannot_break_out_of_cells_spans_or_fences(tmp_path):
    nasty = "/srv/a|b`c``d\x1b[31m"
    plan = planned(tmp_path, {nasty: {"content": "```\n ```\nnot <b>html</b> | cell\n"}}, {})
    text = plan_markdown(plan)
    assert "\x1b" not in text and "\\x1b[31m" in text
    assert "```file.c:/srv/a\\|b`c``d\\x1b[31m```" in text
    [body] = fences(text)
    assert body.splitlines()[-3:] == ["+```", "+ ```", "+not <b>html</b> | cell"]
    assert "\n````diff\n" in text  # longer than any run of backticks inside


def test_a_plan_with_nothing_to_do_says_so_with_its_count(tmp_path):
    plan = planned(tmp_path, {"/a": {"content": "x"}}, {"/a": {"content": "x"}}, unchanged=2)
    text = plan_markdown(plan, "labs/lab.yaml")
    assert "No changes: lab `l` matches labs/lab.yaml (2 objects)." in text


def test_a_huge_plan_stays_under_githubs_comment_limit_and_says_what_it_left_out(tmp_path):
    want = {f"/srv/f{i:03d}": {"content": "".join(f"line {j} of {i}\n" for j in range(60))} for i in range(200)}
    text = plan_markdown(planned(tmp_path, want, {}))
    assert len(text) < MAX_CHARS + 1000
    left = re.search(r"\*(\d+) changes' details left out", text)
    assert left and int(left.group(1)) + len(fences(text)) == 200
    assert text.count("| `+` | create |") == 200  # every change keeps its row


def test_the_unchanged_count_survives_json(tmp_path):
    plan = planned(tmp_path, {"/a": {"content": "x"}}, {}, unchanged=5)
    assert plan_from_json(plan.as_json()).unchanged == 5 and plan.as_json()["unchanged"] == 5
