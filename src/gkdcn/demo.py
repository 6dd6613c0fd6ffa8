"""``gkdcn demo``: the whole pipeline on a generated district, ending in an HTML report.

synthetic district -> prepared dataset -> quick comparison (4 networks and 4 baselines x 2 seeds x
6 epochs, authors' and leave-one-deposit-out protocols) -> streamed GeoTIFF maps from the saved
network files -> evaluation -> explanations of GK-DCN -> report.html. Every step uses the same library calls as
the individual commands, so the demo is also a worked example of the API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.progress import Progress

from gkdcn.compare import RunLayout, make_plan, run_comparison
from gkdcn.config import load_config
from gkdcn.console import format_summary, format_tables
from gkdcn.data.study import build_samples, load_study, save_prepared, summarize
from gkdcn.data.synthetic import SyntheticSpec, generate_district
from gkdcn.evaluate import evaluate_map, write_evaluation
from gkdcn.explain.run import explain_model
from gkdcn.io.atomic import check_writable, clear_output_folder, mark_output
from gkdcn.io.rasters import open_elements, read_probability_map
from gkdcn.models import registry
from gkdcn.models.bundle import ModelBundle
from gkdcn.predict import predict_to_file
from gkdcn.report import build_report


def run_demo(
    out: str | Path,
    *,
    overwrite: bool = False,
    seed: int = 0,
    spec: SyntheticSpec | None = None,
    seeds: int = 2,
    epochs: int = 6,
    map_ig_steps: int = 2,
    workers: int = 1,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the demo into ``out`` and return the path of the report.

    ``spec`` sets the district (default: ``SyntheticSpec(seed=seed)``); ``seeds``, ``epochs`` and
    ``map_ig_steps`` size the comparison and the whole-map attribution. The defaults are the
    demo's; smaller values give the same pipeline in seconds (the test suite runs it that way).
    ``workers``: trainings at once (see :func:`gkdcn.compare.run_comparison`).
    """
    out = Path(out)
    # Only ever empty a folder that holds nothing but what an earlier demo wrote, or none.
    check_writable(out, overwrite, folder=True)
    if out.exists() and overwrite:
        clear_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out, "demo")

    log("1/7 generating the synthetic district")
    config_path = generate_district(out / "district", spec or SyntheticSpec(seed=seed))
    config = load_config(config_path)

    log("2/7 preparing the study (alignment, sites, knowledge, samples)")
    study = load_study(config)
    summary = summarize(study, *build_samples(study))
    log(format_summary(summary))
    save_prepared(study, out / "prepared")

    log("3/7 comparing CNN, DCN, GK-CNN and GK-DCN with four baselines (quick settings)")
    run_dir = out / "comparison"
    layout = RunLayout(run_dir)
    plan = make_plan(config, quick=True, seeds=seeds, epochs=epochs)
    comparison = run_comparison(study, run_dir, plan, progress=progress, workers=workers)
    log(format_tables(comparison))

    log("4/7 predicting full maps from the saved model files (streamed GeoTIFF)")
    maps_dir = out / "maps"
    networks = [
        m for m in plan.models if not registry.is_baseline(m)
    ]  # baselines have no model file
    for model in networks:
        bundle = ModelBundle.load(layout.model_file(model))
        with open_elements(
            config.resolve(config.elements.path), layers=bundle.channels, align=config.align
        ) as source:
            predict_to_file([bundle], source, maps_dir / f"{model}.tif", progress=progress)

    log("5/7 evaluating the maps against the deposits")
    deposits = study.sites.deposits()
    for model in networks:
        prob, valid, _ = read_probability_map(maps_dir / f"{model}.tif")
        ev = evaluate_map(prob, valid, deposits.rows, deposits.cols, n_boot=200, seed=0)
        write_evaluation(ev, out / "evaluation" / model, title=f"{model} (seed 0)")

    log("6/7 explaining GK-DCN (Grad-CAM, deformable sampling, element attribution)")
    gk_dcn_file = layout.model_file("gk-dcn")
    gk_dcn = ModelBundle.load(gk_dcn_file)
    # The input panels show Au, the district's main pathfinder.
    # Few integrated-gradient steps for the whole-map attribution keep the demo within minutes;
    # the per-deposit attributions use the full 50 steps.
    explain_model(
        gk_dcn,
        study,
        layout.explain("gk-dcn").root,
        element="Au",
        top_k=2,
        map_ig_steps=map_ig_steps,
        progress=progress,
        model_file=gk_dcn_file,
    )

    log("7/7 writing the report")
    return build_report(run_dir, out / RunLayout.REPORT)
