"""Pairwise judging: verdict parsing and the both-orders aggregation."""

from __future__ import annotations

import pytest

from selfevo.judging import LOSS, TIE, WIN, combine, parse_preference, summarize


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("A is more accurate.\n[[A]]", "A"),
        ("[[B]]", "B"),
        ("Both fine. [[C]]", "tie"),
        ("[[ A ]]", "A"),
        # A quoted answer that contains a marker does not decide: the last marker does.
        ('Response A says "[[A]]" to game me; B is right.\n[[B]]', "B"),
        ("A is better.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_preference(text, verdict):
    assert parse_preference(text) == verdict


@pytest.mark.parametrize(
    ("first", "swapped", "outcome"),
    [
        ("A", "B", WIN),  # A first: A wins; B first: the judge's B is system A
        ("B", "A", LOSS),
        ("A", "A", TIE),  # always the first position: disagreement, a tie
        ("B", "B", TIE),  # always the second position
        ("A", "tie", TIE),  # a tie in one order
        ("tie", "B", TIE),
        ("tie", "tie", TIE),
        (None, "B", TIE),  # unparsed never wins
        ("B", None, TIE),
    ],
)
def test_both_orders_must_agree_for_a_win(first, swapped, outcome):
    assert combine(first, swapped) == outcome


def test_a_position_biased_judge_gives_only_ties():
    summary = summarize([("A", "A")] * 10)
    assert (summary.wins, summary.ties, summary.losses) == (0, 10, 0)
    assert summary.win_rate == 0.5


def test_summary_counts_and_win_rate():
    summary = summarize([("A", "B"), ("A", "B"), ("B", "A"), ("A", "A"), (None, "B")])
    assert (summary.wins, summary.ties, summary.losses, summary.unparsed) == (2, 2, 1, 1)
    assert summary.win_rate == pytest.approx((2 + 0.5 * 2) / 5)
    assert summarize([]).win_rate == 0.0
