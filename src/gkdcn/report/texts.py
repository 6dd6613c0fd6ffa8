"""The report's prose: what each metric, protocol and figure means, and sentences built
from a run's facts. Words are edited here only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gkdcn.compare.layout import curve_figure_name
from gkdcn.models import registry
from gkdcn.report.formatting import model_label


@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, explained and shown."""

    label: str
    help: str
    higher_is_better: bool = True
    percent: bool = False  # a share in 0..1 shown as %
    unit: str = ""  # shown after the label

    @property
    def title(self) -> str:
        """The label with its unit."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


METRICS: dict[str, MetricInfo] = {
    "auc": MetricInfo(
        "ROC AUC",
        "chance that a deposit outranks a background cell (0.5 = random, 1 = perfect)",
    ),
    "success_auc": MetricInfo(
        "Success-rate AUC",
        "area under the success-rate curve (deposits captured against area, best cells first)",
    ),
    "accuracy": MetricInfo(
        "Accuracy",
        "share of cells classed correctly at the F1-optimal threshold; near 1 whenever deposits "
        "are rare, so it says little on its own",
    ),
    "kappa": MetricInfo("Cohen's kappa", "agreement with the deposit cells beyond chance"),
    "mcc": MetricInfo("MCC", "Matthews correlation of the thresholded map with the deposit cells"),
    "precision": MetricInfo(
        "Precision", "share of cells flagged prospective (above threshold) that are deposit cells"
    ),
    "recall": MetricInfo("Recall", "share of deposit cells that are flagged prospective"),
    "f1": MetricInfo("F1", "harmonic mean of precision and recall"),
    "area_50": MetricInfo(
        "Area for 50 % of deposits",
        "% of the valid area, best cells first, needed to capture half of the held-out deposits",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "area_80": MetricInfo(
        "Area for 80 % of deposits",
        "% of the valid area needed to capture 80 % of the held-out deposits",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "area_100": MetricInfo(
        "Area for all deposits",
        "% of the valid area needed to capture every held-out deposit",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "capture_top10": MetricInfo(
        "Deposits in the top 10 % of area",
        "% of held-out deposits ranked within the best 10 % of the valid area",
        percent=True,
        unit="% of deposits",
    ),
    "capture_top15": MetricInfo(
        "Deposits in the top 15 % of area",
        "% of held-out deposits ranked within the best 15 % of the valid area",
        percent=True,
        unit="% of deposits",
    ),
    "area_above_0.5": MetricInfo(
        "Area at p > 0.5",
        "% of the valid area the held-out fold's map puts above probability 0.5; deposits are "
        "rare, so a map that reads as probabilities keeps this small",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
    "area_above_0.9": MetricInfo(
        "Area at p > 0.9",
        "% of the valid area above probability 0.9 (see tables/<protocol>_calibration.csv for "
        "the reliability of every probability bin)",
        higher_is_better=False,
        percent=True,
        unit="% of area",
    ),
}


PROTOCOL_TEXT = {
    "lodo": (
        "Leave one deposit out. For each deposit in turn, the models are trained without it "
        "(and without any window near it), then asked how highly they rank that deposit "
        "against background cells that no model trained on. Every deposit is scored by a model "
        "that never saw it, "
        "so these numbers estimate how well a model would point at an undiscovered deposit."
    ),
    "blocks": (
        "Spatial-block cross-validation. The map is cut into blocks; each fold holds out whole "
        "blocks, trains on the rest and ranks the held-out deposits against background cells. "
        "Deposits are scored by models that never saw them nor their neighbourhood."
    ),
    "authors": (
        "The authors' protocol, kept to reproduce the paper. Training windows are split at "
        "random, so windows of every deposit are used for training, and the whole map is then "
        "scored against those same deposits. These numbers are in-sample: they show how well "
        "a model fits the known deposits, not how well it finds new ones."
    ),
}


FIGURE_TEXT: dict[str, tuple[str, str]] = {
    curve_figure_name("roc", "authors"): (
        "ROC curves (authors' protocol, in-sample)",
        "True-positive rate (share of deposit cells) against false-positive rate (share of "
        "background cells) as the probability threshold is lowered, for each model's seed-mean "
        "map. The dashed diagonal is a random map. All deposits were used in training.",
    ),
    curve_figure_name("success_rate", "authors"): (
        "Success-rate curves (authors' protocol, in-sample)",
        "Share of deposits captured against share of the valid area, taking cells from the "
        "highest probability down. A curve that rises steeply at the left puts the deposits in "
        "a small area. All deposits were used in training.",
    ),
    curve_figure_name("prediction_area", "authors"): (
        "Prediction–area plot (authors' protocol, in-sample)",
        "Prediction rate (share of deposits above a threshold, left axis) and occupied area "
        "(share of the map above it, right axis) against the probability threshold. Where the "
        "curves cross, X % of the deposits lie in (100 − X) % of the area: the higher the "
        "crossing, the more selective the map.",
    ),
    curve_figure_name("success_rate", "lodo"): (
        "Success-rate curves (leave one deposit out, held-out)",
        "Each held-out deposit placed at the share of background area ranked at or above it by "
        "the model that did not see it, all seeds pooled. This is the curve to trust for "
        "finding new deposits: the dashed diagonal is a random ranking.",
    ),
    curve_figure_name("success_rate", "blocks"): (
        "Success-rate curves (spatial blocks, held-out)",
        "Held-out deposits of every block placed at the share of background area ranked at or "
        "above them by the model of their fold, all seeds pooled; the diagonal is random.",
    ),
}


CURVE_ORDER = (
    curve_figure_name("success_rate", "lodo"),
    curve_figure_name("success_rate", "blocks"),
    curve_figure_name("roc", "authors"),
    curve_figure_name("success_rate", "authors"),
    curve_figure_name("prediction_area", "authors"),
)


SAMPLING_ROWS = (
    ("n_windows", "windows", "count"),
    ("mean_offset_cells", "mean offset length (window cells)", "float"),
    ("outside_share", "share of taps outside the map", "percent"),
    ("outside_share_regular_grid", "same for the undeformed 3 × 3 grid (reference)", "percent"),
    ("mean_mask", "mean modulation mask (0–1)", "float"),
)


def seed_sentence(n_seeds: int, models: Sequence[str]) -> str:
    networks = [model_label(m) for m in models if not registry.is_baseline(m)]
    bases = [m for m in models if registry.is_baseline(m)]
    names = ", ".join(networks) or "no networks"
    if bases:
        names += f" and the baselines {', '.join(bases)}"
    if n_seeds == 1:
        return (
            f"{names}, each trained once (1 seed): no confidence interval can be given, and "
            "differences between models may be chance"
        )
    return f"{names}, each trained with {n_seeds} seeds; numbers are means over the seeds"


def knowledge_text(summary: Any, config: Mapping[str, Any]) -> str:
    knowledge = config.get("knowledge") or {}
    if not isinstance(knowledge, dict) or not (knowledge.get("faults") or knowledge.get("weights")):
        return "none (GK models cannot be trained without it)"
    if knowledge.get("weights"):
        text = f"ready-made weight raster {knowledge['weights']}"
    else:
        decay = knowledge.get("decay") or {}
        if decay.get("kind") == "exponential":
            how = f"exp(−distance / {decay.get('scale', 0):g} map units)"
        else:
            how = (
                f"rings {decay.get('ring_width', 0):g} map units wide, weight falling as a power "
                f"law (exponent {decay.get('exponent', 0):g}) to 0 at ring {decay.get('rings', 0)}"
            )
        text = f"fault proximity from {knowledge['faults']}: {how}"
    if knowledge.get("as_channel"):
        text += "; also fed to the networks as an extra channel"
    if isinstance(summary, dict) and summary.get("mean") is not None:
        text += (
            f". Mean weight {float(summary['mean']):.3f}; "
            f"{100 * float(summary.get('nonzero_fraction') or 0):.1f} % of valid cells have weight > 0"
        )
    return text


def maps_caption(data: Mapping[str, Any]) -> tuple[str, str]:
    return (
        "Mean probability maps (authors' protocol)",
        "Each model's probability of a mineralization-related anomaly, averaged over seeds, on "
        "the map grid (axes in km of the map CRS"
        + (f", {data['crs']}" if data.get("crs") else "")
        + "). Red triangles: known deposits; white lines: faults. Blank cells have no data. "
        "These models were trained with every deposit, so high values at the deposits are "
        "expected; look at where else the models point.",
    )


def baselines_intro(models: Sequence[str]) -> str:
    """What the baselines of a run are, in one sentence ("" when it has none)."""
    bases = [registry.model_kind(m) for m in models if registry.is_baseline(m)]
    if not bases:
        return ""
    parts = "; ".join(f"<b>{kind.name}</b>: {kind.text}" for kind in bases)
    return (
        "Next to the networks come baselines that a network has to beat to be worth its training, "
        f"fitted on the same folds, windows and seeds and scored on the same cells: {parts}."
    )


def baseline_sentence(check: Mapping[str, Any] | None, in_sample: bool = False) -> str:
    """One sentence: did any network beat the best baseline, with the paired difference."""
    if not check:
        return ""
    metric = METRICS.get(str(check.get("metric")), MetricInfo(str(check.get("metric")), ""))
    net, base = model_label(str(check["network"])), str(check["baseline"])
    n = int(check.get("seeds_first_better", 0)) + int(check.get("seeds_second_better", 0))
    diff = (
        f"{float(check['mean_difference']):+.3f} "
        f"[{float(check['ci_lo']):+.3f}, {float(check['ci_hi']):+.3f}]"
    )
    where = " (in-sample)" if in_sample else ""
    means = (
        f"{net} ({metric.label} {float(check['network_mean']):.3f}) against {base} "
        f"({float(check['baseline_mean']):.3f})"
    )
    seeds = f"; {check.get('seeds_first_better', 0)} of {n} seeds favour {net}" if n else ""
    if check.get("beats") and check.get("clear"):
        return (
            f"A network beat the best baseline{where}: the best network, {means}, paired "
            f"difference {diff}{seeds}."
        )
    if check.get("beats"):
        return (
            f"No network has been shown to beat the best baseline{where}: the best network, "
            f"{means}, is ahead on average, paired difference {diff}, an interval that "
            f"includes 0{seeds}."
        )
    return (
        f"No network beat the best baseline{where}: the best network, {means}, paired "
        f"difference {diff}{seeds}."
    )


def ensemble_sentence(records: Sequence[Any], protocol: str) -> str:
    """One sentence on the seed ensembles of a held-out protocol ("" without any): the best
    ensemble against its single seeds (paired by deposit), and the range over all models."""
    rows = [r for r in records if isinstance(r, Mapping) and r.get("auc") is not None]
    if not rows:
        return ""
    best = max(rows, key=lambda r: float(r["auc"]))
    diffs = [float(r["auc_difference"]) for r in rows]
    n = int(best.get("seeds") or 0)
    spread = (
        f"; over all {len(rows)} models the ensemble changes AUC by {min(diffs):+.3f} to "
        f"{max(diffs):+.3f}"
        if len(rows) > 1
        else ""
    )
    return (
        f"Seed ensembles (the mean of the {n} seeds' probabilities per cell, ranked like one "
        f"model): the best, {model_label(str(best['model']))}, reaches ROC AUC "
        f"{float(best['auc']):.3f} against {float(best['single_auc']):.3f} for its single seeds "
        f"(paired over {int(best.get('deposits') or 0)} held-out deposits: "
        f"{float(best['auc_difference']):+.3f} [{float(best['ci_lo']):+.3f}, "
        f"{float(best['ci_hi']):+.3f}]){spread} (tables/{protocol}_ensemble.csv)."
    )
