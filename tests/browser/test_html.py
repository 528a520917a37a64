"""HTML saved by ``viz.save`` renders offline in a real browser (the check a later HTML report reuses)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import pytest

from lexprobe.views import viz

from .pages import assert_html_renders


def _stats_and_trajectories() -> tuple[pd.DataFrame, pd.DataFrame]:
    heads = [(layer, head) for layer in range(2) for head in range(3)]
    stats = pd.DataFrame([{"layer": la, "head": h, "r": 0.9 - 0.2 * (la * 3 + h), "q": 0.01 * (1 + la * 3 + h),
                           "q_logstep": 0.02, "q_diff": 0.02, "q_prev": 0.03, "passes": la * 3 + h == 0}
                          for la, h in heads])
    traj = pd.DataFrame([{"step": s, "layer": la, "head": h, "cue_attn": 0.1 + 0.01 * s * (h + 1),
                          "prev_attn": 0.2} for la, h in heads for s in (0, 8, 64, 512)])
    return stats, traj


def test_saved_html_renders_offline(browser, shot_dir, tmp_path):
    stats, traj = _stats_and_trajectories()
    path = viz.save(viz.head_explorer(stats, traj), tmp_path / "heads.html")
    figs = assert_html_renders(browser, path, expected=1, shot=shot_dir / "viz_save_heads.png")
    assert figs[0].svg is not None and figs[0].svg.count("<path") >= len(stats)  # one rect per head, at least


def test_html_check_fails_on_a_chart_that_needs_the_network(browser, tmp_path):
    """The check is not blind: altair's default HTML (vega loaded from a CDN) must fail it here."""
    stats, traj = _stats_and_trajectories()
    path = tmp_path / "cdn.html"
    viz.head_explorer(stats, traj).save(str(path))  # not inline: scripts come from the CDN
    with pytest.raises(AssertionError, match="request to the network|no vega figure"):
        assert_html_renders(browser, path, timeout_ms=5_000)


def test_supplement_renders_offline(browser, shot_dir, tmp_path, monkeypatch):
    """The five-stage report of the smoke organism: every figure draws with every network request refused."""
    from lexprobe import Study
    from lexprobe.supplement import write_report

    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    path = write_report(Study(progress=False), tmp_path / "supplement.html", command="test")
    expected = path.read_text(encoding="utf-8").count('class="lexprobe-figure"')
    assert expected >= 9
    assert_html_renders(browser, path, expected=expected, shot=shot_dir / "supplement.png", timeout_ms=60_000,
                        width=1400, fits=True)


def test_layout_check_fails_on_a_table_past_the_text_column(browser, tmp_path):
    """The layout check is not blind: a table wider than the text column, a chart legend of translucent swatches,
    and two series told apart by colour alone whose legend a layer's ``legend: null`` cancelled; the stage-4 chart
    that once lost its legend that way passes."""
    from lexprobe.supplement import document
    from lexprobe.views.html import Page

    page = Page()
    page.table(pd.DataFrame({"seed": [0], "words": ["x" * 40]}), "narrow")
    cells = '<td><div style="width: 200px">wide</div></td>' * 20  # 4,000 px that cannot wrap
    page.blocks.append(f'<p><b>wide</b></p><div class="table-wrap"><table><tr>{cells}</tr></table></div>')
    two = pd.DataFrame({"x": [0, 1, 0, 1], "s": ["a", "a", "b", "b"]})
    faded = alt.Chart(two).mark_area(opacity=0.2).encode(x="x:Q", y="x:Q", color="s:N")
    page.chart("faded", faded, "a translucent legend")
    page.chart("unlabelled", alt.layer(faded.encode(color=alt.Color("s:N", legend=None)), faded.mark_line()),
               "two series, no legend")
    page.chart("qk-edit", viz.ablation_chart(_qk_tests(), "qk-copy"), "the stage-4 chart, fixed")
    path = tmp_path / "wide.html"
    path.write_text(document("wide", page), encoding="utf-8")
    with pytest.raises(AssertionError) as err:
        assert_html_renders(browser, path, expected=3, width=1400, fits=True)
    assert "past the text column" in str(err.value) and "fig-1-faded: a legend with no solid swatch" in str(err.value)
    assert "fig-2-unlabelled: several colour series and no legend" in str(err.value)
    assert "narrow" not in str(err.value) and "fig-3-qk-edit" not in str(err.value)


def _qk_tests() -> pd.DataFrame:
    """Null tests of a QK edit for two seeds at three checkpoints (the columns :func:`viz.ablation_chart` reads)."""
    return pd.DataFrame([{"family": "qk-copy", "seed": sd, "step": step, "drop_r2": 0.01 * (sd + 1), "null_q05": 0.0,
                          "null_q95": 0.02, "null_mean": 0.01, "p": 0.5, "n_random": 10}
                         for sd in (0, 1) for step in (0, 8, 64)])
