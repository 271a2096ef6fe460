"""The warm session's attempt check (pure logic): a peer's refusal note is read as the peer's
refusal of this attempt only, bounded and on one line; anything else is a mismatch."""

from __future__ import annotations

from node.sfjob.spu_runtime import REFUSAL_MAX, _refusals, refusal_note


def test_a_refusal_note_of_this_attempt_is_read_as_the_peers_refusal():
    note = refusal_note("exe-1", "party bob refused the task: no column 'k'")
    assert _refusals("exe-1", ["exe-1", note]) == ["party bob refused the task: no column 'k'"]


def test_a_note_for_another_attempt_or_a_plain_id_is_no_refusal():
    assert _refusals("exe-1", ["exe-1", refusal_note("exe-2", "party bob refused")]) == []
    assert _refusals("exe-1", ["exe-1", "exe-9"]) == []
    assert _refusals("exe-1", ["refused exe-1x party bob"]) == []  # not this attempt's prefix


def test_what_a_peer_sends_is_bounded_and_on_one_line():
    hostile = "refused exe-1 " + "party bob\nrefused\r\t" + "x" * 100_000
    (said,) = _refusals("exe-1", [hostile])
    assert "\n" not in said and "\r" not in said and len(said) <= REFUSAL_MAX
    assert said.startswith("party bob refused x")
    assert len(refusal_note("exe-1", "y" * 10_000)) == REFUSAL_MAX
