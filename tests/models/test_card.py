"""The model card's champion line: figures set beside this version's only when they compare."""

from models.card import _comparable


def test_the_champion_line_says_when_its_figures_do_not_compare():
    window = {"test_cutoff": "2026-10-28"}
    same = {"version": "1", "test_cutoff": "2026-10-28", "label_definition": "purchase in 30 days"}
    assert _comparable(same, "purchase in 30 days", window) == ""
    other_snapshot = same | {"test_cutoff": "2026-07-31"}
    assert "another test snapshot, so its figures are not comparable" in _comparable(other_snapshot, "purchase in 30 days", window)
    other_label = same | {"label_definition": "purchase in 56 days"}
    said = _comparable(other_label, "purchase in 30 days", window)
    assert said.startswith(": it predicts purchase in 56 days") and "another outcome" in said
    assert _comparable({"version": "1"}, "purchase in 30 days", window) == ""  # nothing recorded: nothing claimed
