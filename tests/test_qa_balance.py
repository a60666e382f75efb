"""QA answer balance report (pipelines/release/qa_balance.py)."""

from __future__ import annotations

from geodelta.pipelines.release.qa_balance import balance_of, format_balance


def qa(changed: bool, inc: str, loc: str | None = None) -> list[dict[str, str]]:
    items = [
        {"type": "has_change", "answer": "yes" if changed else "no"},
        {"type": "class_increase", "answer": inc},
        {"type": "count_regions", "answer": "1" if changed else "0"},
    ]
    if loc is not None:
        items.append({"type": "location", "answer": loc})
    return items


def test_balance_counts_yes_no_and_answer_classes() -> None:
    b = balance_of(
        [
            qa(True, "Yes", "north"),
            qa(True, "no", "north"),
            qa(True, "yes", "south-east"),
            qa(False, "no"),
        ]
    )
    assert b.samples == 4 and b.items == 15
    assert b.answers["class_increase"] == {"yes": 2, "no": 2}  # answers are normalised
    assert b.yes_share("has_change") == 0.75 and b.yes_share("location") is None
    assert b.yes_no() == (5, 3)
    assert b.answers_changed["class_increase"] == {"yes": 2, "no": 1}
    assert b.majority_share("location") == 2 / 3
    assert b.per_sample["location"] == 3
    text = format_balance(b)
    assert "All yes/no answers: yes 5, no 3 (yes share 0.62)" in text
    assert "On tiles with change: class_increase yes 2 / no 1" in text
    assert "| location | 3 | 3 | north (2), south-east (1) | 0.67 |" in text
