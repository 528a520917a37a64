"""Reading the original study's published distance tables as published (fixtures in tests/data, our sentences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lexprobe.analysis.performance import best_layer, performance
from lexprobe.stimuli.published import from_published

DATA = Path(__file__).parent / "data"
SEEDED = DATA / "published_seeded.csv"  # header of the per-seed files: ...,mpath,revision,seed,step
OLD = DATA / "published_old.csv"  # the older per-checkpoint format: no seed, token counts, n_params


def raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_seeded_file_as_published():
    t = from_published(SEEDED)
    assert set(t["model"]) == {"pythia-14m"}
    assert sorted(t["seed"].unique()) == [1, 2] and sorted(t["step"].unique()) == [0, 512, 1000]
    assert len(t) == 108 and t["same"].sum() == 36  # 2 of 6 pairs are "Same Sense", x 3 layers x 3 steps x 2 seeds
    perf = performance(t)
    assert (perf["target"] == "relatedness").all()
    src = pd.read_csv(SEEDED)
    for (seed, step, layer), g in src.groupby(["seed", "step", "Layer"]):  # noqa: B007 (used by the query's @seed ...)
        r, _ = stats.pearsonr(g["Distance"], g["mean_relatedness"])
        got = perf.query("seed == @seed and step == @step and layer == @layer")
        assert got["r"].item() == pytest.approx(r, abs=1e-12)
        assert got["r2"].item() == pytest.approx(r * r, abs=1e-12)
    best = best_layer(perf).set_index(["seed", "step"])
    assert (best.loc[(slice(None), 1000), "best_layer"] == 2).all()  # planted: layer 2 tracks relatedness most


def test_older_format_without_seed():
    t = from_published(OLD)
    assert set(t["model"]) == {"pythia-70m"} and set(t["seed"]) == {0}
    assert sorted(t["step"].unique()) == [0, 1000]
    quoted = t[t["pair_key"].str.contains("Yes, the warm spring")]
    assert len(quoted) == 4 and not quoted["same"].any()  # quoted sentence with a comma, Different Sense


def test_minimal_table_without_mpath_revision_or_seed():
    df = raw(OLD).drop(columns=["mpath", "revision", "S1_ntokens", "S2_ntokens", "token_diffs", "n_params"])
    t = from_published(df, model="mine")
    assert set(t["model"]) == {"mine"} and set(t["seed"]) == {0}
    assert set(from_published(df)["model"]) == {"published"}
    only_revision = from_published(raw(SEEDED).drop(columns=["step"]))
    assert sorted(only_revision["step"].unique()) == [0, 512, 1000]


def test_seed_repositories_map_to_model_and_seed():
    df = raw(SEEDED)
    df["mpath"] = "EleutherAI/pythia-14m-seed" + df["seed"]  # as PolyPythia names its seed repositories
    t = from_published(df)
    assert set(t["model"]) == {"pythia-14m"} and sorted(t["seed"].unique()) == [1, 2]
    no_seed_column = from_published(df.drop(columns=["seed"]))
    pd.testing.assert_frame_equal(no_seed_column, t)
    df.loc[7, "seed"] = "3"
    with pytest.raises(ValueError, match=r"data row 8, column 'mpath'.*'EleutherAI/pythia-14m-seed1'"):
        from_published(df)


def test_files_concatenate_and_overlaps_are_refused():
    both = from_published([SEEDED, OLD])
    assert set(zip(both["model"], both["seed"])) == {("pythia-14m", 1), ("pythia-14m", 2), ("pythia-70m", 0)}
    with pytest.raises(ValueError, match="appears in more than one"):
        from_published([SEEDED, SEEDED])


@pytest.mark.parametrize("column,value,message", [
    ("Distance", "n/a", r"data row 5, column 'Distance': 'n/a' is not a number"),
    ("Distance", "", r"data row 5, column 'Distance': '' is not a number"),
    ("Same_sense", "Perhaps", r"data row 5, column 'Same_sense': 'Perhaps' is not 'Same Sense' or 'Different Sense'"),
    ("Layer", "1.5", r"data row 5, column 'Layer': '1.5' is not a non-negative integer"),
    ("step", "-2", r"data row 5, column 'step': '-2' is not a non-negative integer"),
    ("revision", "step7", r"data row 5, column 'revision': 'step7' is not the same step as column 'step'"),
    ("revision", "main", r"data row 5, column 'revision': 'main' is not a revision 'stepN'"),
    ("seed", "one", r"data row 5, column 'seed': 'one' is not a non-negative integer"),
    ("mean_relatedness", "high", r"data row 5, column 'mean_relatedness': 'high' is not a number"),
    ("word", " ", r"data row 5, column 'word': ' ' is not a non-empty text"),
])
def test_bad_cells_name_row_and_column(column, value, message):
    df = raw(SEEDED)
    df.loc[4, column] = value
    with pytest.raises(ValueError, match=message):
        from_published(df)


def test_file_errors_name_the_file_line(tmp_path):
    lines = SEEDED.read_text().splitlines()
    lines[3] = lines[3].replace("Same Sense", "Sam Sense")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 4 \(data row 3\), column 'Same_sense': 'Sam Sense'"):
        from_published(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_published(tmp_path / "missing.csv")


def test_structural_errors():
    with pytest.raises(ValueError, match=r"lacks columns \['Layer'\]"):
        from_published(raw(SEEDED).drop(columns=["Layer"]))
    with pytest.raises(ValueError, match="neither a 'step' nor a 'revision'"):
        from_published(raw(SEEDED).drop(columns=["step", "revision"]))
    dup = pd.concat([raw(SEEDED), raw(SEEDED).iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"data row 109, column 'sentence1'.* repeats .* data row 4"):
        from_published(dup)
    with pytest.raises(ValueError, match=r"column 'mpath'.*model 'pythia-70m'"):
        from_published(raw(SEEDED), model="pythia-70m")


def test_missing_relatedness_switches_target_to_sense():
    df = raw(SEEDED)
    df["mean_relatedness"] = "NA"  # how R writes a missing rating
    t = from_published(df)
    assert t["mean_relatedness"].isna().all()
    assert (performance(t)["target"] == "same").all()
    assert np.isfinite(performance(t)["auc"]).all()
