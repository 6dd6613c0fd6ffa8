"""Networks, losses, the trainer and the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gkdcn.config import TrainConfig, TransformConfig
from gkdcn.data.samples import SampleSet, Split
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError, InputError, Note
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.deform import DeformConv2d
from gkdcn.models.losses import GKLoss
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.training.loop import fit_network
from gkdcn.training.windows import prepare_windows


@pytest.mark.parametrize("kind", ["cnn", "dcn", "gk-cnn", "gk-dcn"])
@pytest.mark.parametrize("head", ["gap", "flatten"])
def test_networks_return_one_logit_per_window(kind: str, head: str) -> None:
    spec = ModelSpec(kind=kind, in_channels=5, window=9, head=head, width=8)
    net = build_network(spec).eval()
    out = net(torch.randn(3, 5, 9, 9))
    assert out.shape == (3,)
    assert isinstance(net.conv2, DeformConv2d) == spec.deformable
    assert isinstance(net.conv3, DeformConv2d) == spec.deformable


def test_authors_head_has_their_layer_sizes() -> None:
    net = build_network(ModelSpec(kind="cnn", in_channels=39, window=9, head="flatten"))
    linear = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(2048, 512), (512, 64), (64, 1)]


def test_plain_and_deformable_twins_differ_only_in_inner_layers() -> None:
    cnn = build_network(ModelSpec(kind="cnn", in_channels=4, window=9))
    dcn = build_network(ModelSpec(kind="dcn", in_channels=4, window=9))
    cnn_names = {n for n, _ in cnn.named_parameters() if not n.startswith(("conv2", "conv3"))}
    dcn_names = {n for n, _ in dcn.named_parameters() if not n.startswith(("conv2", "conv3"))}
    assert cnn_names == dcn_names


def test_bad_spec_is_a_clear_error() -> None:
    with pytest.raises(GkdcnError, match="unknown model kind"):
        ModelSpec(kind="resnet", in_channels=3, window=9)  # type: ignore[arg-type]
    with pytest.raises(GkdcnError, match="odd"):
        ModelSpec(kind="cnn", in_channels=3, window=8)


def test_gk_loss_forms() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5])
    target = torch.tensor([1.0, 0.0, 1.0])
    w = torch.tensor([1.0, 0.0, 0.5])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(GKLoss("sigmoid-mse", 0.0)(logits, target, w), bce)
    loss = GKLoss("sigmoid-mse", 0.1)
    p = torch.sigmoid(logits)
    expected = bce + 0.1 * torch.mean((p - torch.sigmoid(w)) ** 2)  # a=1, b=0 at init
    assert torch.allclose(loss(logits, target, w), expected)
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected_abs = (per + 0.1 * w * (p - target).abs()).mean()
    assert torch.allclose(GKLoss("weighted-abs", 0.1)(logits, target, w), expected_abs)


# --------------------------------------------------------------------------------------------
# trainer on a tiny hand-made problem


def _toy(seed: int = 0, size: int = 24, channels: int = 3):
    """A map with bright 3x3 bodies at 'deposits' and flat noise elsewhere."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0.0, 0.3, size=(channels, size, size)).astype(np.float32)
    deposits = [(4, 4), (4, 18), (12, 10), (19, 5), (19, 19), (10, 20)]
    negatives = [(2, 11), (8, 2), (15, 14), (22, 12), (13, 3), (6, 15)]
    for r, c in deposits:
        raw[:, r - 1 : r + 2, c - 1 : c + 2] *= 6.0
    sites = deposits + negatives
    labels = np.array([1] * len(deposits) + [0] * len(negatives))
    rows, cols, lab, site = [], [], [], []
    for i, ((r, c), y) in enumerate(zip(sites, labels, strict=True)):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rows.append(r + dr)
                cols.append(c + dc)
                lab.append(y)
                site.append(i)
    samples = SampleSet(
        rows=np.array(rows),
        cols=np.array(cols),
        labels=np.array(lab, dtype=np.float32),
        site=np.array(site),
        aug=np.zeros(len(rows), dtype=np.int8),
    )
    val_sites = {0, 6}
    in_val = np.isin(samples.site, list(val_sites))
    split = Split(
        name="site",
        train=np.flatnonzero(~in_val),
        val=np.flatnonzero(in_val),
        description="toy",
        held_out=np.array(sorted(val_sites)),
    )
    knowledge = (np.arange(size * size, dtype=np.float32).reshape(size, size)) / (size * size)
    return raw, knowledge, samples, split


def _prepared(window: int = 7):
    raw, knowledge, samples, split = _toy()
    names = [f"E{i}" for i in range(raw.shape[0])]
    return (
        prepare_windows(
            raw, names, knowledge, samples, split, TransformConfig(method="log"), window, "zero"
        ),
        knowledge,
        samples,
        split,
    )


def test_knowledge_weight_is_read_at_each_windows_own_centre() -> None:
    data, knowledge, samples, split = _prepared()
    assert np.array_equal(
        data.train.knowledge, knowledge[samples.rows[split.train], samples.cols[split.train]]
    )
    # and the loss receives exactly those values, batch by batch
    seen: list[np.ndarray] = []
    original = GKLoss.forward

    def spy(self, logits, target, w):  # type: ignore[no-untyped-def]
        seen.append(w.detach().numpy().copy())
        return original(self, logits, target, w)

    GKLoss.forward = spy  # type: ignore[method-assign]
    try:
        fit_network(
            "gk-cnn", data, TrainConfig(width=16, epochs=1, batch_size=1000, patience=None), seed=0
        )
    finally:
        GKLoss.forward = original  # type: ignore[method-assign]
    assert len(seen) == 1
    assert np.array_equal(np.sort(seen[0]), np.sort(data.train.knowledge))


def test_transform_is_fitted_on_training_windows_only() -> None:
    raw, knowledge, samples, split = _toy()
    raw_val_bumped = raw.copy()
    # change a cell that only validation windows cover: the fitted transform must not move
    vr, vc = samples.rows[split.val][0], samples.cols[split.val][0]
    from gkdcn.data.transforms import cells_in_windows

    covered = set(
        cells_in_windows(raw.shape[1:], samples.rows[split.train], samples.cols[split.train], 7)
    )
    assert vr * raw.shape[2] + vc not in covered
    raw_val_bumped[:, vr, vc] *= 1000
    names = ["a", "b", "c"]
    cfg = TransformConfig(method="log")
    a = prepare_windows(raw, names, knowledge, samples, split, cfg, 7, "zero").transform
    b = prepare_windows(raw_val_bumped, names, knowledge, samples, split, cfg, 7, "zero").transform
    assert a.to_dict() == b.to_dict()


def test_same_seed_gives_identical_weights_and_history() -> None:
    data, *_ = _prepared()
    cfg = TrainConfig(width=16, epochs=3, batch_size=16, patience=None)
    one = fit_network("gk-dcn", data, cfg, seed=3)
    two = fit_network("gk-dcn", data, cfg, seed=3)
    other = fit_network("gk-dcn", data, cfg, seed=4)
    for key, value in one.bundle.state.items():
        assert torch.equal(value, two.bundle.state[key]), key
    assert one.history.equals(two.history)
    assert any(not torch.equal(v, other.bundle.state[k]) for k, v in one.bundle.state.items())


def test_training_separates_the_toy_deposits() -> None:
    data, *_ = _prepared()
    result = fit_network(
        "dcn", data, TrainConfig(width=16, epochs=25, batch_size=16, patience=None), seed=0
    )
    assert result.history["val_auc"].iloc[result.best_epoch - 1] > 0.9


def test_early_stopping_restores_the_best_weights() -> None:
    data, *_ = _prepared()
    result = fit_network(
        "cnn", data, TrainConfig(width=16, epochs=30, batch_size=16, patience=3, lr=5e-3), seed=1
    )
    best = result.history["val_loss"].idxmin()
    assert result.best_epoch == int(result.history["epoch"].iloc[best])
    assert len(result.history) <= result.best_epoch + 3
    from gkdcn.training.loop import evaluate_windows

    restored = evaluate_windows(result.bundle.network(), data.val)
    assert restored["val_loss"] == pytest.approx(result.history["val_loss"].min(), rel=1e-5)


# --------------------------------------------------------------------------------------------
# model file


def _bundle(kind: str = "dcn") -> ModelBundle:
    spec = ModelSpec(kind=kind, in_channels=3, window=7, width=8)
    torch.manual_seed(0)
    net = build_network(spec)
    transform = ChannelTransform.fit(
        np.random.default_rng(0).lognormal(size=(50, 3)), "clr", "standard"
    )
    return ModelBundle(
        spec=spec,
        state=net.state_dict(),
        channels=["Au", "As", "Sb"],
        transform=transform,
        padding="reflect",
        train_config=TrainConfig().model_dump(mode="json"),
        info={"note": "test"},
    )


def test_model_file_round_trips(tmp_path) -> None:
    bundle = _bundle()
    path = bundle.save(tmp_path / "m.pt")
    loaded = ModelBundle.load(path)
    assert loaded.channels == bundle.channels
    assert loaded.spec == bundle.spec
    assert loaded.padding == "reflect"
    assert loaded.transform.to_dict() == bundle.transform.to_dict()
    assert loaded.train_config == bundle.train_config
    x = torch.randn(4, 3, 7, 7)
    with torch.no_grad():
        assert torch.equal(bundle.network()(x), loaded.network()(x))


def test_model_file_with_an_unknown_padding_is_refused_on_load(tmp_path) -> None:
    import json

    path = _bundle().save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    meta["padding"] = "mirror"
    payload["meta"] = json.dumps(meta)
    torch.save(payload, path)
    with pytest.raises(InputError, match="unknown padding 'mirror'") as info:
        ModelBundle.load(path)
    assert str(info.value).startswith(str(path))


def test_model_file_is_loaded_without_unpickling_code(tmp_path) -> None:
    import pickle

    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("owned",))

    with open(path, "wb") as f:
        pickle.dump({"meta": Evil()}, f)
    with pytest.raises(InputError, match="not a readable gkdcn model file"):
        ModelBundle.load(path)


def test_model_file_refuses_mismatched_channels() -> None:
    bundle = _bundle()
    assert bundle.channel_order(["Sb", "Au", "As"]) == [1, 2, 0]
    with pytest.raises(InputError, match="missing layers Sb") as info:
        bundle.channel_order(["Au", "As", "Cu"], source="grid.tif")
    assert str(info.value).startswith("grid.tif:")
    # extra layers are selected away by name, with a note naming them
    with pytest.warns(Note, match="1 unused: Cu"):
        assert bundle.channel_order(["Cu", "Sb", "Au", "As"], source="grid.tif") == [2, 3, 1]


def test_corrupt_or_missing_model_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    for path in (bad, tmp_path / "missing.pt"):
        with pytest.raises(InputError) as info:
            ModelBundle.load(path)
        assert "\n" not in str(info.value)


def test_model_file_never_overwrites(tmp_path) -> None:
    bundle = _bundle()
    path = bundle.save(tmp_path / "m.pt")
    before = path.read_bytes()
    with pytest.raises(GkdcnError, match="already exists"):
        bundle.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_training_on_a_small_synthetic_district_finds_its_deposits(tmp_path) -> None:
    """A small generated district: validation windows of held-out sites are told apart."""
    from gkdcn.config import load_config
    from gkdcn.data.study import load_study
    from gkdcn.data.synthetic import SyntheticSpec, generate_district
    from gkdcn.training.study import train_study

    config_path = generate_district(
        tmp_path / "d", SyntheticSpec(height=48, width=64, n_layers=6, n_deposits=8, seed=1)
    )
    study = load_study(load_config(config_path))
    cfg = study.config.train.model_copy(update={"epochs": 15, "width": 16, "patience": None})
    result = train_study(study, "gk-dcn", cfg=cfg, seed=0)
    assert result.history["val_auc"].iloc[result.best_epoch - 1] > 0.9
