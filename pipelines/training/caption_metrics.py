"""Caption metrics: BLEU-4, ROUGE-L and CIDEr (pycocoevalcap) after a fixed Python tokenizer.

pycocoevalcap's own ``PTBTokenizer`` runs Stanford CoreNLP in a Java process; geodelta keeps
the metric independent of a JVM with :func:`tokenize`, a fixed rule set (version
:data:`TOKENIZER`), applied to candidates and references alike:

1. Unicode NFKC normalisation, then lower case;
2. tokens, left to right: numbers (``2``, ``2.5``, ``1,200``), words (letters, with inner
   hyphens kept: ``north-west``), clitics split off their word (``tile's`` -> ``tile 's``,
   as PTB does), and ``%``;
3. every other character (punctuation, symbols, spaces) separates tokens and is dropped.

Tokens are joined with single spaces, which is the form the pycocoevalcap scorers split on.
Scores are pycocoevalcap's: ``Bleu(4)`` (corpus BLEU, "closest" reference length; the 4-gram
score is reported), ``Rouge`` (ROUGE-L, beta 1.2, mean over samples) and ``Cider``
(CIDEr-D as in the COCO evaluation: document frequencies from the references of the scored
set, so it needs several samples; x10 scale).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from geodelta.errors import ModelError

__all__ = ["TOKENIZER", "CaptionScoreError", "CaptionScores", "caption_scores", "tokenize"]

#: Name and version of the tokenizer (recorded in reference/metrics.json).
TOKENIZER = (
    "geodelta-simple/1 (NFKC, lower case; numbers, hyphenated words, clitics, '%'; "
    "other punctuation dropped)"
)

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:-[^\W\d_]+)*|'[^\W\d_]+|%")


class CaptionScoreError(ModelError):
    """Candidates and references that cannot be scored; says which sample."""


def tokenize(text: str) -> str:
    """The fixed tokenization (module docstring) of one caption, tokens joined by spaces."""
    norm = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    return " ".join(_TOKEN.findall(norm))


@dataclass(frozen=True)
class CaptionScores:
    """Corpus scores and the per-sample BLEU-4 / ROUGE-L / CIDEr (same order as the keys)."""

    bleu4: float
    rouge_l: float
    cider: float
    keys: tuple[str, ...]
    per_sample: dict[str, tuple[float, float, float]]


def caption_scores(
    references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]
) -> CaptionScores:
    """BLEU-4, ROUGE-L and CIDEr of one candidate caption per sample against its references.

    Args:
        references: sample key -> reference captions (at least one each).
        candidates: sample key -> the candidate caption (the same keys).

    Returns:
        Corpus BLEU-4, mean ROUGE-L, CIDEr, and per-sample scores.

    Raises:
        CaptionScoreError: the key sets differ, a sample has no reference, or nothing to score.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(candidates):
        only_r = sorted(set(references) - set(candidates))[:5]
        only_c = sorted(set(candidates) - set(references))[:5]
        raise CaptionScoreError(
            f"references and candidates name different samples (only in references: {only_r}, "
            f"only in candidates: {only_c})"
        )
    if not references:
        raise CaptionScoreError("no samples to score")
    keys = tuple(sorted(references))
    gts: dict[str, list[str]] = {}
    res: dict[str, list[str]] = {}
    for key in keys:
        refs = [tokenize(r) for r in references[key]]
        if not refs:
            raise CaptionScoreError(f"sample {key!r} has no reference caption")
        gts[key] = refs
        res[key] = [tokenize(candidates[key])]
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    per = {
        k: (float(bleu_each[3][i]), float(rouge_each[i]), float(cider_each[i]))
        for i, k in enumerate(keys)
    }
    return CaptionScores(
        bleu4=float(bleu[3]),
        rouge_l=float(rouge),
        cider=float(cider),
        keys=keys,
        per_sample=per,
    )
