"""Text prompts: split into phrases, normalise, and map detector tokens back to phrases.

GroundingDINO reads one string in which phrases end with "." ("skateboard. cap."); its
text encoder treats [CLS], [SEP], "." and "?" as phrase boundaries. Each of its queries
scores every *token*, so a label has to be rebuilt from tokens. Decoding the tokens that
pass a threshold (what the transformers post-processor does) yields merged labels
("plant flower") and word pieces ("##van"). Here every token is mapped to the phrase whose
characters it covers, and a detection takes the one phrase with the highest token score.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from textseg.errors import PromptError

__all__ = ["Prompt", "parse_prompt", "phrase_scores", "token_phrase_ids"]

# Phrase separators. "," and "." are what users type; ";", "?" and new lines are split too
# because GroundingDINO's encoder treats "?" as a boundary as well.
_SEPARATORS = re.compile(r"[,.;?\n\r]+")


@dataclass(frozen=True)
class Prompt:
    """A normalised prompt.

    phrases: distinct phrases, lower case, single-spaced, in the user's order.
    text: what the detector reads: "phrase one. phrase two." (one "." per phrase).
    spans: (start, end) character range of each phrase inside `text`.
    """

    phrases: tuple[str, ...]
    text: str
    spans: tuple[tuple[int, int], ...]


def _clean_phrase(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    return " ".join(text.split())


def parse_prompt(prompt: str) -> Prompt:
    """Split `prompt` at commas/periods into phrases and build the detector's text.

    "Skateboard, a red CAP." → phrases ("skateboard", "a red cap"), text
    "skateboard. a red cap.". Duplicates are dropped; a phrase needs at least one letter
    or digit (any script). Raises PromptError when no phrase is left.
    """
    if not isinstance(prompt, str):
        raise PromptError(f"the prompt must be a string, got {type(prompt).__name__}")
    phrases: list[str] = []
    for part in _SEPARATORS.split(prompt):
        phrase = _clean_phrase(part)
        if any(c.isalnum() for c in phrase) and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise PromptError(
            f"the prompt {prompt!r} has no words to look for; "
            "describe the objects, separated by commas, e.g. 'skateboard, cap'"
        )
    spans: list[tuple[int, int]] = []
    pos = 0
    for phrase in phrases:
        spans.append((pos, pos + len(phrase)))
        pos += len(phrase) + 2  # ". "
    text = ". ".join(phrases) + "."
    return Prompt(phrases=tuple(phrases), text=text, spans=tuple(spans))


def token_phrase_ids(
    offsets: list[tuple[int, int]] | np.ndarray, spans: tuple[tuple[int, int], ...]
) -> np.ndarray:
    """Phrase index of each token, or -1 for tokens outside every phrase.

    offsets: (T, 2) character (start, end) of each token in the prompt text, as the fast
        tokenizer returns with `return_offsets_mapping=True`; special tokens are (0, 0).
    spans: (P,) phrase character ranges from `Prompt.spans`.
    Returns (T,) int64. Separators ("."), [CLS], [SEP] and padding map to -1.
    """
    out = np.full(len(offsets), -1, dtype=np.int64)
    for t, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        for p, (s, e) in enumerate(spans):
            if start >= s and end <= e:
                out[t] = p
                break
    return out


def phrase_scores(
    token_probs: np.ndarray, token_phrase: np.ndarray, num_phrases: int
) -> np.ndarray:
    """Score of every phrase for every query: the highest probability among its tokens.

    token_probs: (Q, T) sigmoid scores of Q detector queries over T text tokens (T may be
        longer than token_phrase, e.g. GroundingDINO pads to 256; the extra columns are
        ignored).
    token_phrase: (T',) phrase index per token from `token_phrase_ids`, -1 = none.
    Returns (Q, P) float32; a phrase without tokens scores 0.
    """
    probs = np.asarray(token_probs, dtype=np.float32)
    if probs.ndim != 2:
        raise ValueError(f"token_probs must be (queries, tokens), got shape {probs.shape}")
    n_tok = min(probs.shape[1], len(token_phrase))
    out = np.zeros((probs.shape[0], num_phrases), dtype=np.float32)
    for p in range(num_phrases):
        cols = np.flatnonzero(token_phrase[:n_tok] == p)
        if len(cols):
            out[:, p] = probs[:, cols].max(axis=1)
    return out
