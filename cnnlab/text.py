"""User strings as data: run names, class and file names, query parameters.

Anything a user typed or uploaded is shown to every viewer, so it must never act as markup
or code: Streamlit renders st.error/st.caption/labels as Markdown (links, images, colour
directives, LaTeX), Plotly renders a little HTML in labels (``<a href>`` included), and the
generated Keras script is Python. Names also may not carry invisible characters that make
one name look like another (bidi overrides, zero-width joiners).
"""

from __future__ import annotations

import re
import unicodedata

# The characters that start Markdown or Streamlit syntax: links and images ("[", "!["),
# HTML and autolinks ("<"), emphasis, code, headings, tables, LaTeX ("$") and Streamlit's
# ":red[...]", ":material/x:" and ":smile:". CommonMark lets any of them be backslash-escaped.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#|<>~$:])")
# GitHub-flavoured Markdown also links bare addresses (http://…, www.…, a@b.c); a word
# joiner (invisible, zero width) inside each pattern keeps them text.
_AUTOLINK = re.compile(r"(?i)(://|www\.|@)")
_JOINER = "\u2060"


def markdown(value: object) -> str:
    """``value`` as Markdown that renders exactly as its text (one line: newlines → spaces)."""
    flat = " ".join(str(value).splitlines())
    unlinked = _AUTOLINK.sub(lambda m: m.group(1)[0] + _JOINER + m.group(1)[1:], flat)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", unlinked)


def chart_label(value: object) -> str:
    """``value`` as a Plotly label that renders as its text (Plotly reads a little HTML)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def hidden_characters(value: str) -> list[str]:
    """The control, format (bidi, zero-width) and separator characters in ``value`` that a
    name may not contain, as 'U+202E' codes (an empty list when it is clean)."""
    found = []
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs"):
            found.append(f"U+{ord(ch):04X}")
    return found


def name_problem(value: str, what: str = "name") -> str | None:
    """Why ``value`` cannot be a name (control or bidi characters), or None."""
    hidden = hidden_characters(value)
    if hidden:
        return (f"The {what} {value.encode('unicode_escape').decode('ascii')!r} contains "
                f"invisible control or bidirectional-text characters ({', '.join(hidden[:3])}); "
                "allowed are visible characters only: type the name again.")
    return None
