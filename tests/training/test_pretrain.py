"""Self-supervised pretraining of the trunk: label-free, seeded, and it learns something."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gkdcn.config import load_config
from gkdcn.data.sites import SiteTable
from gkdcn.data.study import Study, load_study
from gkdcn.data.synthetic import SyntheticSpec, generate_district
from gkdcn.errors import GkdcnError
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.pretrain import (
    TRUNK_LAYERS,
    PretrainSettings,
    load_trunk,
    pretrain_study,
    trunk_state,
)

QUICK = PretrainSettings(epochs=3, windows=256, batch_size=64)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    root = tmp_path_factory.mktemp("pretrain") / "d"
    spec = SyntheticSpec(height=40, width=40, n_layers=5, n_deposits=6, seed=4)
    return load_study(load_config(generate_district(root, spec)))


def _spec(study: Study, kind: str = "cnn") -> ModelSpec:
    return ModelSpec(kind=kind, in_channels=len(study.names), window=9, width=8)  # type: ignore[arg-type]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["cnn", "dcn"])
def test_pretraining_reads_no_label(study: Study, kind: str) -> None:
    first = pretrain_study(study, _spec(study, kind), seed=1, settings=QUICK)
    rng = np.random.default_rng(0)
    sites = study.sites
    shuffled = SiteTable(
        ids=sites.ids, labels=rng.permutation(sites.labels), rows=sites.rows, cols=sites.cols
    )
    again = pretrain_study(
        replace(study, sites=shuffled), _spec(study, kind), seed=1, settings=QUICK
    )
    assert _same(first.trunk, again.trunk)  # bit for bit
    assert first.losses == again.losses


def test_pretraining_is_seeded(study: Study) -> None:
    a = pretrain_study(study, _spec(study), seed=1, settings=QUICK)
    b = pretrain_study(study, _spec(study), seed=2, settings=QUICK)
    assert not _same(a.trunk, b.trunk)


def test_pretraining_lowers_the_masked_reconstruction_loss(study: Study) -> None:
    result = pretrain_study(
        study, _spec(study), seed=0, settings=PretrainSettings(epochs=8, windows=512)
    )
    assert result.losses[-1] < 0.8 * result.losses[0]


def test_a_trunk_loads_into_a_fresh_network_and_leaves_its_head(study: Study) -> None:
    result = pretrain_study(study, _spec(study), seed=0, settings=QUICK)
    torch.manual_seed(5)
    net = build_network(_spec(study))
    head = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("head.")}
    load_trunk(net, result.trunk)
    assert _same(trunk_state(net), result.trunk)
    assert _same({k: v for k, v in net.state_dict().items() if k.startswith("head.")}, head)
    assert {k.split(".")[0] for k in result.trunk} == set(TRUNK_LAYERS)
    wider = build_network(replace(_spec(study), width=16))
    with pytest.raises(GkdcnError, match="does not fit"):
        load_trunk(wider, result.trunk)


def test_a_comparison_pretrains_one_trunk_per_seed_and_architecture(
    study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gkdcn.compare.run as run_module
    from gkdcn.compare import make_plan, run_comparison

    made: list[tuple[str, int]] = []
    real = run_module.pretrain_for_training

    def counted(study_, kind, cfg, seed, *, device="cpu"):  # type: ignore[no-untyped-def]
        made.append((kind, seed))
        return real(study_, kind, cfg, seed, device=device)

    monkeypatch.setattr(run_module, "pretrain_for_training", counted)
    config = study.config.model_copy(
        update={
            "train": study.config.train.model_copy(
                update={"pretrain": "masked-channels", "pretrain_epochs": 1,
                        "pretrain_windows": 128, "width": 4}
            )
        }
    )  # fmt: skip
    plan = make_plan(
        config, quick=True, seeds=2, epochs=1, models=["cnn", "gk-cnn"], protocols=["lodo"]
    )
    comparison = run_comparison(replace(study, config=config), tmp_path / "run", plan, workers=1)
    assert sorted(made) == [("cnn", 0), ("cnn", 1)]  # gk-cnn shares the plain trunk
    results = list((tmp_path / "run" / "lodo" / "cnn" / "seed0").glob("*/result.json"))
    assert results and all("pretrain" in json.loads(p.read_text()) for p in results)
    assert comparison is not None
