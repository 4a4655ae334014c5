"""How explanations are shown: one self-contained HTML page, each text's words shaded by their
share of the score, and the model card's sections on them.

Only the standard library: `predict --explain --html` writes it from the records `predict`
prints, for a local model or a server alike. No script, font, image or link: a Content
Security Policy forbids everything but the page's own inline style, and every word, label
and class name is escaped, so a review containing `<script>` shows as text.
"""

from __future__ import annotations

import html
from pathlib import Path

FOR, AGAINST = (22, 130, 60), (200, 40, 40)  # RGB of words for the label, and against it

STYLE = """
body { font: 16px/1.6 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.legend { color: #555; margin-top: 0; }
.key { padding: 0 0.3em; border-radius: 3px; }
section { border-top: 1px solid #ddd; padding: 0.6em 0; }
h2 { font-size: 1.1em; margin: 0.2em 0; font-weight: normal; }
.words span { padding: 0.1em 0.15em; border-radius: 3px; }
.score { color: #666; font-size: 0.85em; margin: 0.3em 0 0; }
.source { color: #666; font-size: 0.85em; margin: 0; }
"""


def _shade(value: float, peak: float) -> str:
    color = FOR if value >= 0 else AGAINST
    alpha = min(1.0, abs(value) / peak) * 0.85 if peak > 0 else 0.0
    return f"background: rgba({color[0]}, {color[1]}, {color[2]}, {alpha:.2f})"


def _section(number: int, record: dict) -> str:
    label = record["label"]
    probability = record["probabilities"].get(label, 0.0)
    words = record.get("words", [])
    peak = max((abs(a) for _, a in words), default=0.0)
    spans = " ".join(
        f'<span style="{_shade(a, peak)}" title="{a:+.4f}">{html.escape(word)}</span>'
        for word, a in words
    )
    others = ", ".join(
        f"{html.escape(name)} {p:.3f}" for name, p in record["probabilities"].items()
    )
    total = sum(a for _, a in words)
    lines = [
        "<section>",
        f"<h2>{number}. <b>{html.escape(label)}</b>, probability {probability:.3f}"
        f" <span class='score'>({others})</span></h2>",
    ]
    if record.get("text"):
        lines.append(f'<p class="source">{html.escape(record["text"][:200])}</p>')
    lines.append(f'<p class="words">{spans}</p>')
    if "score" in record:
        lines.append(
            f'<p class="score">log-odds of {html.escape(label)}: {record["score"]:+.3f}, '
            f"{record['baseline_score']:+.3f} for the baseline (every word a zero vector, "
            f"no n-gram); the words' shares sum to {total:+.3f}</p>"
        )
    return "\n".join(lines + ["</section>"])


def explanation_page(records: list[dict], title: str = "Why the model said so") -> str:
    """The HTML page of explained texts.

    Args:
        records: one per text, as `client.to_records` makes them from an explanation (`label`,
            `probabilities`, `words`, `score`, `baseline_score`), optionally with `text`.
        title: the page's heading.

    Returns:
        One HTML document: no scripts, no network, every text escaped.

    Example:
        >>> page = explanation_page([{"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9},
        ...     "words": [["wonderful", 1.2], ["film", -0.1]], "score": 2.2,
        ...     "baseline_score": 1.1}])
        >>> "wonderful</span>" in page and "<script" not in page
        True
    """
    key = (
        f'<span class="key" style="{_shade(1, 1)}">for the label</span> '
        f'<span class="key" style="{_shade(-1, 1)}">against it</span>'
    )
    sections = "\n".join(_section(i, r) for i, r in enumerate(records, 1))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="legend">Each word as the model read it, shaded by its share of the score (the
predicted label's log-odds; integrated gradients): {key}. The stronger the shade, the larger
the share; hover a word for its value.</p>
{sections}
</body>
</html>
"""


def write_explanation_page(path: str | Path, records: list[dict]) -> Path:
    """Write `explanation_page(records)` to `path` (UTF-8) and return it."""
    path = Path(path)
    path.write_text(explanation_page(records), encoding="utf-8")
    return path


# --- the model card's sections ----------------------------------------------------------


def card_ngrams(summary: dict) -> str:
    """The model card's section on the n-gram branch's strongest n-grams ("" without)."""
    ngrams = summary.get("explanations", {}).get("ngrams")
    if not ngrams:
        return ""
    names = summary.get("class_names") or ["negative", "positive"]
    lines = ["## What the n-gram branch learned", ""]
    lines.append(
        "Its strongest n-grams each way, as vocabulary words (lemmas where lemmatized), with "
        "their coefficient (times the NB ratio) in the branch's logit:"
    )
    for key, name in (("positive", names[-1]), ("negative", names[0])):
        shown = ", ".join(f"{words.replace('<', '&lt;')} ({c:+.2f})" for words, c in ngrams[key])
        lines += ["", f"- Towards **{name}**: {shown}"]
    return "\n".join(lines)


def card_explained(summary: dict) -> str:
    """The model card's section on three explained test reviews ("" without)."""
    reviews = summary.get("explanations", {}).get("reviews")
    if not reviews:
        return ""
    lines = ["## Three test reviews explained", ""]
    lines.append(
        "Each word's share of the score (the predicted label's log-odds, n-gram mix "
        "included) by integrated gradients from a baseline of zero word vectors and no "
        "n-grams (the `explain` signature). The shares sum to score - baseline."
    )
    for r in reviews:
        pushes = ", ".join(f"{w.replace('<', '&lt;')} ({a:+.2f})" for w, a in r["for"])
        against = ", ".join(f"{w.replace('<', '&lt;')} ({a:+.2f})" for w, a in r["against"])
        lines += [
            "",
            f"- **{r['kind']}**: true **{r['true']}**, predicted **{r['predicted']}** with "
            f"probability {r['probability']:.3f}; log-odds {r['score']:+.2f} against "
            f"{r['baseline_score']:+.2f} for the baseline, shares summing to {r['sum']:+.2f}.",
            f"  For the label: {pushes or 'none'}. Against it: {against or 'none'}.",
            "",
            f"  > {r['text'].replace('<', '&lt;')}",
        ]
    return "\n".join(lines)
