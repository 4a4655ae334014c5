"""How explanations are shown: one self-contained HTML page, each text's words shaded by their
share of the score (the model card's sections on them are in `model_card.py`).

Only the standard library: `predict --explain --html` writes it from the records `predict`
prints, for a local model or a server alike. No script, font, image or link: a Content
Security Policy forbids everything but the page's own inline style, and every word, label
and class name is escaped, so a review containing `<script>` shows as text.
"""

from __future__ import annotations

import html
from pathlib import Path

# One colour per direction: with two classes, toward the first class and toward the second
# (for IMDB, neg and pos); with more, toward the predicted class and against it. Red and blue
# (ColorBrewer's RdBu ends) stay apart for red-green colour blindness, and no direction is
# green: readers take green for "positive" whatever the label.
FIRST, SECOND = (178, 24, 43), (33, 102, 172)
PEAK_ALPHA = 0.85  # the strongest word's shade

STYLE = """
body { font: 16px/1.6 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.legend { color: #444; margin-top: 0; }
.key { padding: 0.05em 0.4em; border-radius: 3px; }
section { border-top: 1px solid #ddd; padding: 0.6em 0; }
h2 { font-size: 1.1em; margin: 0.2em 0; font-weight: normal; }
.words span { padding: 0.1em 0.15em; border-radius: 3px; }
.score { color: #595959; font-size: 0.85em; margin: 0.3em 0 0; }
.source { color: #595959; font-size: 0.85em; margin: 0; }
"""


def _luminance(rgb: tuple[float, float, float]) -> float:
    # WCAG 2's relative luminance of an sRGB colour.
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """WCAG 2's contrast ratio of two colours (1 to 21; 4.5 is enough for body text)."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def shade(color: tuple[int, int, int], alpha: float) -> tuple[str, tuple, tuple]:
    """The CSS of a word's shade on the white page, with black or white text, whichever reads
    better on it (one of them always reaches WCAG's 4.5:1); and the background and text
    colours it gives, for checks."""
    background = tuple(255 + alpha * (c - 255) for c in color)  # over white
    text = BLACK if contrast(background, BLACK) >= contrast(background, WHITE) else WHITE
    css = f"background: rgba({color[0]}, {color[1]}, {color[2]}, {alpha:.2f})"
    if alpha > 0.05:  # barely shaded words keep the page's own text colour
        css += "; color: #fff" if text == WHITE else "; color: #000"
    return css, background, text


def directions(class_names: list[str], label: str) -> tuple[str, str]:
    """What a positive and a negative share push toward, in words: with two classes the
    class each favours, with more the predicted class and against it."""
    if len(class_names) == 2 and label in class_names:
        other = class_names[1 - class_names.index(label)]
        return f"toward {label}", f"toward {other}"
    return f"toward {label}", f"against {label}"


def _colors(class_names: list[str], label: str) -> tuple[tuple, tuple]:
    # The colours of a positive and a negative share: each class keeps its own colour.
    if len(class_names) == 2 and label == class_names[0]:
        return FIRST, SECOND
    return SECOND, FIRST


def _section(number: int, record: dict) -> str:
    label = record["label"]
    names = list(record["probabilities"])
    probability = record["probabilities"].get(label, 0.0)
    words = record.get("words", [])
    peak = max((abs(a) for _, a in words), default=0.0)
    up, down = directions(names, label)
    colors = _colors(names, label)
    spans = []
    for word, a in words:
        alpha = min(1.0, abs(a) / peak) * PEAK_ALPHA if peak > 0 else 0.0
        css, _, _ = shade(colors[0] if a >= 0 else colors[1], alpha)
        title = f"{abs(a):.4f} {up if a >= 0 else down}"
        spans.append(f'<span style="{css}" title="{html.escape(title)}">{html.escape(word)}</span>')
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
    lines.append(f'<p class="words">{" ".join(spans)}</p>')
    if "score" in record:
        lines.append(
            f'<p class="score">log-odds of {html.escape(label)}: {record["score"]:+.3f}, '
            f"{record['baseline_score']:+.3f} for the baseline (every word a zero vector, "
            f"no n-gram); the words' shares sum to {total:+.3f}</p>"
        )
    return "\n".join(lines + ["</section>"])


def _legend(records: list[dict]) -> str:
    names = list(records[0]["probabilities"]) if records else []
    if len(names) == 2:
        keys = [(FIRST, f"toward {names[0]}"), (SECOND, f"toward {names[1]}")]
        how = "the class it pushes the answer toward"
    else:
        keys = [(SECOND, "toward the predicted label"), (FIRST, "against it")]
        how = "whether it pushes toward the predicted label or against it"
    shown = " ".join(
        f'<span class="key" style="{shade(color, PEAK_ALPHA)[0]}">{html.escape(text)}</span>'
        for color, text in keys
    )
    return (
        f"Each word as the model read it, coloured by {how}: {shown}. The stronger the shade, "
        "the larger its share of the score (the predicted label's log-odds; integrated "
        "gradients); hover a word for its value."
    )


def explanation_page(records: list[dict], title: str = "Why the model said so") -> str:
    """The HTML page of explained texts.

    Each word is coloured by the direction of its share: with two classes, one colour per
    class (the class the word pushes toward, whichever was predicted); with more, one colour
    toward the predicted label and one against it. The legend says which.

    Args:
        records: one per text, as `client.to_records` makes them from an explanation (`label`,
            `probabilities` in the model's class order, `words`, `score`, `baseline_score`),
            optionally with `text`.
        title: the page's heading.

    Returns:
        One HTML document: no scripts, no network, every text escaped.

    Example:
        >>> page = explanation_page([{"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9},
        ...     "words": [["wonderful", 1.2], ["film", -0.1]], "score": 2.2,
        ...     "baseline_score": 1.1}])
        >>> "wonderful</span>" in page and "toward neg" in page and "<script" not in page
        True
    """
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
<p class="legend">{_legend(records)}</p>
{sections}
</body>
</html>
"""


def write_explanation_page(path: str | Path, records: list[dict]) -> Path:
    """Write `explanation_page(records)` to `path` (UTF-8) and return it."""
    path = Path(path)
    path.write_text(explanation_page(records), encoding="utf-8")
    return path
