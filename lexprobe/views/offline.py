"""Charts in Jupyter with no network, and quickly.

altair's own default renderer emits HTML whose script loads vega, vega-lite and vega-embed from a public CDN when
the output is viewed, and JupyterLab 4 only ships renderers for vega-lite v3-v5, so on an offline machine every
chart would be blank. :func:`enable_offline` registers the ``lexprobe`` renderer: each chart becomes an anywidget
(``alt.JupyterChart``) whose JavaScript is vega + vega-lite + vega-embed bundled from the ``vl-convert-python``
wheel, sent to the browser over the kernel connection. Selections (clicks, hovers) run in the browser as usual.
Saved notebooks stay small: an output is only a widget reference, not a copy of the ~0.9 MB bundle. Charts are
drawn as SVG so that text stays crisp and tests can read the marks.

What a notebook's first chart cost, measured (``benchmarks/cached_study.py``), and what is done about it:

* vl-convert builds the bundle anew in every kernel (2.2 s): it depends only on the pinned altair and vl-convert,
  so it is built once and kept in ``$LEXPROBE_HOME/cache`` under a key of both versions (:func:`offline_bundle`).
* altair's ``jupyter`` renderer rebuilds a chart object from the spec it is given and converts it back (1-2 s per
  chart, every data row validated twice more): the widget here is given the spec the chart's own ``to_dict`` has
  just validated. (Python-side selection read-outs, ``JupyterChart(chart).selections``, need the chart object:
  build that widget yourself where you want them.)
* jsonschema, which altair imports, imports the optional IRI checker ``rfc3987_syntax`` when it is installed
  (jupyter-events installs it), and that builds an Earley parser at import: 2.9 s of every kernel's first chart.
  No chart schema checks the ``iri`` format, so :mod:`lexprobe.views` keeps it out of the kernel
  (:func:`skip_iri_parser`, before altair is imported).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from lexprobe.base.files import atomic_write
from lexprobe.base.paths import home

EMBED_OPTIONS = {"renderer": "svg"}
IRI_PARSER = "rfc3987_syntax"


def skip_iri_parser() -> None:
    """Keep jsonschema's optional IRI parser out of this process (unless something imported it already): jsonschema
    then leaves the ``iri`` format unchecked, as it does wherever the parser is not installed."""
    sys.modules.setdefault(IRI_PARSER, None)  # type: ignore[arg-type]  # None in sys.modules: ImportError on import


def bundle_path() -> Path:
    """Where the offline JavaScript bundle of this altair and vl-convert is kept."""
    key = f"altair-{version('altair')}-vl-convert-{version('vl-convert-python')}"
    return home() / "cache" / f"jupyter-chart-{key}.js"


def built_bundle() -> str:
    """altair's JupyterChart JavaScript bundled with vega, vega-lite and vega-embed, as altair builds it offline."""
    from altair import JupyterChart

    was = JupyterChart._esm, JupyterChart._is_offline
    JupyterChart._is_offline = False
    try:
        JupyterChart.enable_offline(offline=True)
        return str(JupyterChart._esm)
    finally:
        JupyterChart._esm, JupyterChart._is_offline = was


def offline_bundle() -> str:
    """:func:`built_bundle`, built once per altair and vl-convert version and read from the cache afterwards."""
    path = bundle_path()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    text = built_bundle()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))
    return text


def _use_offline_bundle() -> None:
    from altair import JupyterChart

    if not JupyterChart._is_offline:
        JupyterChart._esm = offline_bundle()
        JupyterChart._is_offline = True


def jupyter_chart(spec: dict, **metadata: Any) -> Any:
    """The ``lexprobe`` renderer: a JupyterChart widget showing ``spec`` (already validated) as it is."""
    from altair import JupyterChart

    if metadata.get("offline", False):
        _use_offline_bundle()
    # its chart trait allows None: the widget then shows whatever spec it is given
    widget = JupyterChart(chart=None, embed_options=metadata.get("embed_options"))  # type: ignore[arg-type]
    widget.spec = spec
    return widget._repr_mimebundle_()


def enable_offline() -> None:
    """Make altair charts render offline in Jupyter (the ``lexprobe`` renderer, SVG output)."""
    import altair as alt

    alt.renderers.register("lexprobe", jupyter_chart)
    alt.renderers.enable("lexprobe", offline=True, embed_options=EMBED_OPTIONS)
