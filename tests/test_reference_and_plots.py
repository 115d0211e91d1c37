"""Published reference tables, comparison tables (Markdown / CSV / LaTeX) and PNG plots."""

import csv
import io
import json

import pytest
import yaml

from fusion_bench.constants import config_dir
from fusion_bench.reference import (
    PUBLISHED_METHODS,
    TABLE_METHODS,
    TASK_NAMES,
    available,
    load_reference,
    parse_reference,
)
from fusion_bench.tables import comparison_rows, csv_table, latex_escape, latex_table

CLIP_TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(method, overrides=(), avg=0.5, tasks=CLIP_TASKS, method_info=None, **method_cfg):
    """A completed report whose every task scores ``avg`` (accuracy in [0, 1])."""
    return {
        "status": "completed",
        "config": {"method": {"_target_": f"fusion_bench.method.x.{method}", **method_cfg}},
        "run_info": {"choices": {"method": method}, "overrides": [f"method={method}", *overrides]},
        "metrics": {t: {"accuracy": avg} for t in tasks},
        "average": {"accuracy": avg},
        "timings_s": {"fuse": 1.0, "evaluate": 2.0},
        "peak_memory_mb": {"cpu_peak_rss": 100.0},
        "method_info": method_info or {},
    }


def _by_label(rows):
    return {r[0]: r for r in rows}


# --- reference tables -------------------------------------------------------------------------


@pytest.mark.parametrize("name", available())
def test_every_shipped_reference_loads(name):
    ref = load_reference(name)
    assert ref.description and ref.rows
    assert set(ref.tasks) <= set(TASK_NAMES.values()), "a published task column has no mapping"
    for row in ref.rows:
        assert row.average is not None and 0 < row.average <= 100
        assert all(v is None or 0 <= v <= 100 for v in row.scores.values())
    # one published row per configuration, or a run would match two of them
    specs = [(r.method, sorted(r.params.items())) for r in ref.rows if r.method]
    assert len(specs) == len(set(map(str, specs)))


def test_shipped_references_are_the_expected_ones():
    assert "clip-vit-b32_TA8" in available() and "gpt2_glue" in available()
    b32 = load_reference("clip-vit-b32_TA8")
    assert b32.tasks == CLIP_TASKS
    pre = b32.rows[0]
    assert (pre.label, pre.method, pre.average, pre.scores["stanford-cars"]) == (
        "Pre-trained",
        "dummy",
        48.2,
        59.8,
    )
    # GPT-2 uses "Avg." and has no STS-B column
    gpt2 = load_reference("gpt2_glue")
    assert "stsb" not in gpt2.tasks and gpt2.rows[-1].average == 70.0
    # empty published cells load as None
    smile = load_reference("clip-vit-b32_TA8_smile")
    assert smile.rows[1].scores["sun397"] is None and smile.rows[1].average == 89.30


def test_every_mapped_method_has_a_config_with_those_hyperparameters():
    mapped = list(PUBLISHED_METHODS.values())
    mapped += [m for table in TABLE_METHODS.values() for m in table.values()]
    mapped += [("dummy", {"model_name": t}) for t in TASK_NAMES.values()]
    for method, params in mapped:
        path = config_dir() / "method" / f"{method}.yaml"
        assert path.exists(), f"published row mapped to missing config {method}"
        assert set(params) <= set(yaml.safe_load(path.read_text())), (method, params)


def test_every_published_row_name_is_known():
    """A new CSV row must be mapped (or knowingly left out here)."""
    published_only = {
        "Traditional MTL",
        "WUDI-Merging",
        "ISO-C (scaling factor=1.5)",
        "ISO-CTS (scaling factor=1.5)",
        "SMILE L/14 (gate_k=16, k=32)",
    }
    for name in available():
        for row in load_reference(name).rows:
            assert (row.method is not None) != (row.label in published_only), (name, row.label)


def test_unknown_reference_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: .*clip-vit-b32_TA8"):
        load_reference("no-such-table")


def test_parse_reference_rejects_a_bad_layout():
    with pytest.raises(ValueError, match="comment"):
        parse_reference("x", "Method,SUN397,Average\nA,1,1\n")
    with pytest.raises(ValueError, match="Average"):
        parse_reference("x", "# c\nMethod,SUN397,Mean\nA,1,1\n")


def test_matching_respects_published_hyperparameters():
    gpt2, b32 = load_reference("gpt2_glue"), load_reference("clip-vit-b32_TA8")
    default = _report("task_arithmetic", scaling_factor=0.3)
    swept = _report("task_arithmetic", ["method.scaling_factor=0.5"], scaling_factor=0.5)
    other = _report("task_arithmetic", ["method.drop_rate=0.1"], scaling_factor=0.3)
    assert b32.match(default).label == "Task Arithmetic (λ=0.3)"
    assert gpt2.match(default) is None  # GPT-2's published λ is 0.5
    assert gpt2.match(swept).label == "Task Arithmetic (λ=0.5)"
    assert b32.match(swept) is None
    assert b32.match(other) is None  # an override the published number did not use
    # `-m experiment=...` is a setting, not a hyperparameter
    in_grid = _report("task_arithmetic", ["experiment=clip-vit-b32_TA8"], scaling_factor=0.3)
    assert b32.match(in_grid).label == "Task Arithmetic (λ=0.3)"
    # a config in a subgroup (method=gpt2/...) is matched by its base name and resolved values
    gpt2_ta = _report("gpt2/task_arithmetic", scaling_factor=0.5)
    assert gpt2.match(gpt2_ta).label == "Task Arithmetic (λ=0.5)"
    # GPT-2's RegMean used off-diagonal scale 0.6, the CLIP tables' 0.95
    regmean = _report("regmean", reduce_non_diagonal_ratio=0.95)
    gpt2_regmean = _report("gpt2/regmean", reduce_non_diagonal_ratio=0.6)
    assert gpt2.match(regmean) is None and gpt2.match(gpt2_regmean).label == "RegMean"
    assert b32.match(regmean).label == "RegMean" and b32.match(gpt2_regmean) is None
    expert = _report("dummy", ["method.model_name=stanford-cars"], model_name="stanford-cars")
    assert load_reference("clip-vit-b32_individual").match(expert).label == "Cars"
    assert b32.match(expert) is None


# --- comparison tables ------------------------------------------------------------------------


def _comparison():
    reports = [
        _report("task_arithmetic", avg=0.7, scaling_factor=0.3),
        _report("dummy", avg=0.5, model_name="_pretrained_"),
        _report("my_new_method", avg=0.25),
    ]
    return comparison_rows(reports, load_reference("clip-vit-b32_TA8"))


def test_comparison_cells():
    header, rows = _comparison()
    assert header == ["Method", *CLIP_TASKS, "Average", "Published", "Δ"]
    rows = _by_label(rows)
    # ours 0.5 -> 50.0; published Pre-trained 48.2 -> +1.8
    assert rows["Pre-trained"][1] == "50.0"
    assert rows["Pre-trained"][-3:] == ["50.0", "48.2", "+1.8"]
    # the best average of our rows is emphasised; TA published 68.0
    assert rows["task_arithmetic"][-3:] == ["**70.0**", "68.0", "+2.0"]
    assert rows["my_new_method"][-3:] == ["25.0", "-", "-"]
    # published rows without a run follow, with their own per-task numbers
    wemoe = rows["Weight-Ensembling MoE [published]"]
    assert wemoe[1:3] == ["73.7", "76.8"] and wemoe[-3:] == ["-", "89.2", "-"]
    assert "Pre-trained [published]" not in rows and "Traditional MTL [published]" in rows
    assert len(rows) == 3 + 19 - 2


def test_comparison_negative_and_zero_differences():
    ref = load_reference("clip-vit-b32_TA8")
    _, rows = comparison_rows([_report("dummy", avg=0.4, model_name="_pretrained_")], ref)
    assert rows[0][-1] == "-8.2"
    _, rows = comparison_rows([_report("dummy", avg=0.48196, model_name="_pretrained_")], ref)
    assert rows[0][-1] == "+0.0"  # not "-0.0"


def test_comparison_needs_a_percentage_metric():
    with pytest.raises(ValueError, match="percentages"):
        comparison_rows([_report("dummy")], load_reference("clip-vit-b32_TA8"), metric="loss")


def test_comparison_csv_round_trip():
    header, rows = _comparison()
    parsed = list(csv.reader(io.StringIO(csv_table(header, rows))))
    assert parsed[0] == header
    assert parsed[1:] == [[c.strip("*") for c in r] for r in rows]
    assert "Task Arithmetic (λ=0.3) [published]" not in {r[0] for r in parsed}


def test_latex_escaping():
    assert latex_escape("a_b 50% R&D #1 $x {y} ~^") == (
        r"a\_b 50\% R\&D \#1 \$x \{y\} \textasciitilde{}\textasciicircum{}"
    )
    assert latex_escape("Task Arithmetic (λ=0.3)") == r"Task Arithmetic ($\lambda$=0.3)"
    assert latex_escape("back\\slash") == r"back\textbackslash{}slash"


def test_latex_table_layout_and_best_in_bold():
    header, rows = _comparison()
    tex = latex_table(header, rows)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}"
    assert lines[1:3] == [
        r"\toprule",
        r"Method & sun397 & stanford-cars & resisc45 & eurosat & "
        r"svhn & gtsrb & mnist & dtd & Average & Published & $\Delta$ \\",
    ]
    assert lines[3] == r"\midrule" and lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert tex.count(r"\textbf") == 1 and r"task\_arithmetic" in tex
    assert r"\textbf{70.0} & 68.0 & +2.0 \\" in tex and "**" not in tex
    assert r"Efficient Weight-Ensembling MoE (90\%) [published]" in tex


def test_latex_of_the_plain_table_bolds_only_the_best_average():
    from fusion_bench.tables import table_rows

    header, rows = table_rows([_report("a", avg=0.3), _report("b", avg=0.6)])
    tex = latex_table(header, rows)
    assert tex.count(r"\textbf") == 1 and r"\textbf{60.0}" in tex


# --- plots ------------------------------------------------------------------------------------


def _sweep_reports():
    reports = [
        _report("task_arithmetic", [f"method.scaling_factor={x}"], avg=a)
        for x, a in [(0.5, 0.6), (0.1, 0.4), (0.3, 0.7)]
    ]
    reports += [
        _report("ties_merging", ["method.scaling_factor=0.3", "method.threshold=10"], avg=0.65),
        _report("ties_merging", ["method.scaling_factor=0.6", "method.threshold=10"], avg=0.55),
        _report("simple_average", avg=0.5),  # no override: not a sweep point
        _report("task_arithmetic", ["method.scaling_factor=1/N"], avg=0.5),  # not numeric
    ]
    return reports


def test_sweep_data():
    from fusion_bench.plots import sweep_series, swept_parameter

    reports = _sweep_reports()
    assert swept_parameter(reports) == "scaling_factor"
    assert swept_parameter([_report("simple_average")]) is None
    series = sweep_series(reports, "method.scaling_factor")
    assert list(series) == ["task_arithmetic", "ties_merging (threshold=10)"]
    assert [x for x, _ in series["task_arithmetic"]] == [0.1, 0.3, 0.5]
    assert [y for _, y in series["task_arithmetic"]] == pytest.approx([40.0, 70.0, 60.0])
    assert [x for x, _ in series["ties_merging (threshold=10)"]] == [0.3, 0.6]


def test_params_data_uses_only_reported_counts():
    from fusion_bench.plots import params_points

    reports = [
        _report("smile_upscaling", avg=0.8, method_info={"params_upscaled": 2_000_000}),
        _report("task_arithmetic", avg=0.7),
        _report("weight_ensembling_moe", avg=0.9, method_info={"params_upscaled": 5_000_000}),
    ]
    assert params_points(reports) == [
        ("smile_upscaling", 2_000_000, pytest.approx(80.0)),
        ("weight_ensembling_moe", 5_000_000, pytest.approx(90.0)),
    ]
    assert params_points([_report("task_arithmetic")]) == []


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plots_write_png_files(tmp_path):
    from fusion_bench import plots

    reports = _sweep_reports()
    reports.append(_report("smile_upscaling", avg=0.8, method_info={"params_upscaled": 10**6}))
    out = [
        plots.plot_per_task(reports, tmp_path / "bars.png"),
        plots.plot_sweep(reports, tmp_path / "sweep.png"),
        plots.plot_params(reports, tmp_path / "sub" / "params.png"),
    ]
    assert out == [tmp_path / "bars.png", tmp_path / "sweep.png", tmp_path / "sub" / "params.png"]
    assert all(_is_png(p) for p in out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "bars.png",
        "params.png",
        "sub",
        "sweep.png",
    ]
    # deterministic: the same data gives the same bytes
    again = plots.plot_per_task(reports, tmp_path / "again.png")
    assert again.read_bytes() == out[0].read_bytes()


def test_plots_refuse_missing_data(tmp_path):
    from fusion_bench import plots

    with pytest.raises(ValueError, match="params_upscaled"):
        plots.plot_params([_report("task_arithmetic")], tmp_path / "p.png")
    with pytest.raises(ValueError, match="numeric hyperparameter"):
        plots.plot_sweep([_report("task_arithmetic")], tmp_path / "s.png")
    assert not list(tmp_path.iterdir())


# --- the script -------------------------------------------------------------------------------


def _collect():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "collect_reports.py"
    spec = importlib.util.spec_from_file_location("collect_reports", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _write_runs(root, reports):
    for i, r in enumerate(reports):
        (root / f"run{i}").mkdir(parents=True)
        (root / f"run{i}" / "report.json").write_text(json.dumps(r))


def test_script_reference_tex_and_plots(tmp_path, capsys):
    _write_runs(tmp_path / "runs", _sweep_reports()[:3])
    main = _collect()
    out = tmp_path / "t.tex"
    rc = main(
        [
            str(tmp_path / "runs"),
            "--reference",
            "clip-vit-b32_TA8",
            "-o",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert rc == 0
    tex = out.read_text()
    assert tex.startswith(r"\begin{tabular}") and r"task\_arithmetic (scaling\_factor=0.3)" in tex
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["per_task.png", "sweep.png"]
    assert "skipped params.png" in capsys.readouterr().out
    # --format wins over the suffix
    rc = main(
        [
            str(tmp_path / "runs"),
            "--reference",
            "gpt2_glue",
            "--format",
            "csv",
            "-o",
            str(tmp_path / "t.md"),
        ]
    )
    assert rc == 0 and (tmp_path / "t.md").read_text().startswith("Method,sun397,")
    assert "tasks differ from gpt2_glue" in capsys.readouterr().err
    # the default stays Markdown, now with the published source and columns
    assert main([str(tmp_path / "runs"), "--reference", "clip-vit-b32_TA8"]) == 0
    md = capsys.readouterr().out
    assert "Published: CLIP-ViT-B/32, eight tasks" in md
    assert "| Method | sun397 |" in md and "| Average | Published | Δ |" in md


def test_script_unknown_reference_is_one_line(tmp_path, capsys):
    _write_runs(tmp_path, [_report("dummy", model_name="_pretrained_")])
    assert _collect()([str(tmp_path), "--reference", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "available: " in err and "gpt2_glue" in err
