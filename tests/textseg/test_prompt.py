"""Prompt normalisation and token → phrase mapping (pure logic, plus the real tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest

from textseg.errors import PromptError
from textseg.prompt import parse_prompt, phrase_scores, token_phrase_ids


def test_parse_splits_lowercases_and_dedupes():
    p = parse_prompt("  Skateboard,  a Red   CAP. skateboard;\ncap ")
    assert p.phrases == ("skateboard", "a red cap", "cap")
    assert p.text == "skateboard. a red cap. cap."
    assert p.text.count(".") == len(p.phrases)


def test_spans_point_at_each_phrase():
    p = parse_prompt("dog, traffic light, person?")
    assert [p.text[s:e] for s, e in p.spans] == list(p.phrases)


@pytest.mark.parametrize("bad", ["", "   ", ",,, . ;", "!!! ?", "\n\t", "-- , **"])
def test_prompts_without_words_are_refused(bad):
    with pytest.raises(PromptError, match="no words"):
        parse_prompt(bad)


def test_non_string_prompt_is_refused():
    with pytest.raises(PromptError, match="string"):
        parse_prompt(["cat"])  # type: ignore[arg-type]


def test_unicode_is_accepted():
    p = parse_prompt("Café au lait, 猫, Ёлка")
    assert p.phrases == ("café au lait", "猫", "ёлка")


def test_token_phrase_ids_from_offsets():
    p = parse_prompt("cat, red car")  # "cat. red car."
    # [CLS] cat . red car . [SEP] [PAD]
    offsets = [(0, 0), (0, 3), (3, 4), (5, 8), (9, 12), (12, 13), (0, 0), (0, 0)]
    assert token_phrase_ids(offsets, p.spans).tolist() == [-1, 0, -1, 1, 1, -1, -1, -1]


def test_phrase_scores_take_the_best_token_of_each_phrase():
    token_phrase = np.array([-1, 0, -1, 1, 1, -1])
    probs = np.array(
        [
            [0.9, 0.2, 0.95, 0.1, 0.6, 0.0, 0.0],  # separator/CLS scores are ignored
            [0.0, 0.7, 0.0, 0.3, 0.1, 0.0, 0.0],
        ]
    )  # one extra padded column, like GroundingDINO's 256-wide logits
    scores = phrase_scores(probs, token_phrase, 3)
    np.testing.assert_allclose(scores, [[0.2, 0.6, 0.0], [0.7, 0.3, 0.0]])


def test_real_tokenizer_maps_every_word_piece_to_its_phrase(text_segmenter):
    tokenizer = text_segmenter.detector.processor.tokenizer
    p = parse_prompt("skateboard, zebra crossing, 猫")
    enc = tokenizer(p.text, return_offsets_mapping=True)
    ids = token_phrase_ids(enc["offset_mapping"], p.spans)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    for token, phrase in zip(tokens, ids):
        if token in ("[CLS]", "[SEP]", "."):
            assert phrase == -1
        else:  # word pieces ("##e") and unknown characters belong to their phrase
            assert phrase in (0, 1, 2)
    assert set(ids.tolist()) == {-1, 0, 1, 2}
    # "zebra crossing" is split into many pieces in the tiny vocabulary, all phrase 1
    assert sum(ids == 1) > 2
