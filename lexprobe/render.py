"""Charts that render in JupyterLab with no network.

altair's own default renderer emits HTML whose script loads vega, vega-lite and vega-embed from a public CDN when
the output is viewed, and JupyterLab 4 only ships renderers for vega-lite v3-v5, so on an offline machine every
chart would be blank. :func:`enable_offline` switches altair to its ``jupyter`` renderer in offline mode: each chart
becomes an anywidget (``alt.JupyterChart``) whose JavaScript is vega + vega-lite + vega-embed bundled from the
``vl-convert-python`` wheel, sent to the browser over the kernel connection. Selections (clicks, hovers) run in the
browser as usual and are also readable from Python (``JupyterChart(chart).selections``). Saved notebooks stay
small: an output is only a widget reference, not a copy of the ~0.9 MB bundle. Charts are drawn as SVG so that
text stays crisp and tests can read the marks.

:mod:`lexprobe.viz` calls :func:`enable_offline` on import; ``alt.renderers.enable(...)`` afterwards overrides it.
"""

from __future__ import annotations

import altair as alt

EMBED_OPTIONS = {"renderer": "svg"}


def enable_offline() -> None:
    """Make altair charts render offline in Jupyter (JupyterChart widget with bundled JavaScript, SVG output)."""
    alt.renderers.enable("jupyter", offline=True, embed_options=EMBED_OPTIONS)
