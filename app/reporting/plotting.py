"""The one place figures are drawn: matplotlib on the Agg backend, rendered to inline SVG.

Every figure of the report, the statistics page, monitoring and the plan page goes through
`pyplot()` (imported on first use, so the app starts light) and `svg(fig, salt)` (ids salted so
several SVGs can share one HTML page).
"""

from __future__ import annotations

import io
import re
from typing import Any


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (keeps app start-up light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def svg(fig: Any, salt: str) -> str:
    """The figure as an <svg> element to inline in HTML (no XML prolog, text kept as text)."""
    import matplotlib

    plt = pyplot()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # The RDF metadata block (creator, date) is noise in a report and changes on every run.
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    # Ids must be unique across the several SVGs of one page.
    return re.sub(r'(id="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{salt}-{m.group(2)}", text)
