"""Mixed-precision training: the deformable op under bfloat16 autocast, and ``precision``.

Under autocast the op samples in float32 and runs its matrix products in bfloat16, so its output
and gradients must equal the float32 op's to bfloat16 rounding (about 3 significant digits),
with every gradient in its input's dtype; without gradients it must run in float32 exactly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from gkdcn.compare import make_plan, run_comparison
from gkdcn.compare.jobs import fingerprint
from gkdcn.compare.layout import RunLayout
from gkdcn.config import TrainConfig, TransformConfig
from gkdcn.data.samples import leave_one_deposit_out
from gkdcn.data.study import load_study
from gkdcn.models import deform
from gkdcn.models.bundle import ModelBundle
from gkdcn.models.deform import DeformConv2d, deform_conv2d
from gkdcn.models.nets import ModelSpec, build_network
from gkdcn.runtime import resolve_precision, training_autocast
from gkdcn.training.loop import fit_network
from gkdcn.training.windows import prepare_windows
from helpers import tiny_comparison_config

# (n, c_in, c_out, h, w, offset groups, weight groups): ungrouped, offset groups, weight groups
CASES = [(3, 8, 6, 7, 6, 1, 1), (2, 8, 6, 6, 7, 2, 1), (2, 8, 6, 5, 5, 2, 2)]
NAMES = ("input", "offset", "mask", "weight", "bias")


def _inputs(case: tuple[int, ...], seed: int) -> dict[str, Tensor]:
    n, c_in, c_out, h, w, g, wg = case
    gen = torch.Generator().manual_seed(seed)
    return {
        "input": torch.randn(n, c_in, h, w, generator=gen),
        "offset": torch.randn(n, 2 * g * 9, h, w, generator=gen) * 1.5,
        "mask": torch.rand(n, g * 9, h, w, generator=gen),
        "weight": torch.randn(c_out, c_in // wg, 3, 3, generator=gen),
        "bias": torch.randn(c_out, generator=gen),
    }


def _run(tensors: dict[str, Tensor], autocast: bool) -> tuple[Tensor, list[Tensor]]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = deform_conv2d(
            leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
            padding=1, mask=leaves["mask"],
        )  # fmt: skip
    # Both runs get the same (bfloat16-representable) upstream gradient, so what differs is
    # the op's own arithmetic.
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).bfloat16()
    grads = torch.autograd.grad(out, [leaves[k] for k in NAMES], upstream.to(out.dtype))
    return out, list(grads)


def _relative_error(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("blocks", ["one", "per-image"])
@pytest.mark.parametrize("case", CASES)
def test_autocast_equals_float32_to_bfloat16_rounding(
    case: tuple[int, ...], blocks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if blocks == "per-image":  # columns gathered again in the backward pass, block by block
        monkeypatch.setattr(deform, "_BLOCK_BYTES", 1)
    tensors = _inputs(case, seed=sum(case))
    out32, grads32 = _run(tensors, autocast=False)
    out16, grads16 = _run(tensors, autocast=True)
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16  # as autocast conv2d
    # bfloat16 keeps 8 significant bits (unit roundoff 2**-9 = 2e-3): the products' rounded
    # inputs cost a few 1e-3, and more would be a bug. Not float32 in disguise either: the
    # output and every gradient through the products moved.
    errors = {"output": _relative_error(out16, out32)}
    errors |= {n: _relative_error(a, b) for n, a, b in zip(NAMES, grads16, grads32, strict=True)}
    bias = errors.pop("bias")
    assert bias < 1e-6  # summed in float32 from the same upstream gradient
    for name, error in errors.items():
        assert 5e-4 < error < 6e-3, (name, error)


def test_backward_returns_each_gradient_in_its_inputs_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Autograd would cast a wrong dtype back silently, so look at what backward returns.
    seen: list[tuple[torch.dtype | None, ...]] = []
    original = deform._DeformConv.backward

    def spy(ctx: object, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads = original(ctx, grad_out)  # type: ignore[arg-type]
        seen.append(tuple(None if g is None else g.dtype for g in grads[:5]))
        return grads

    monkeypatch.setattr(deform._DeformConv, "backward", staticmethod(spy))
    _run(_inputs(CASES[2], seed=4), autocast=True)  # grouped weights: the batched products
    assert seen == [(torch.float32,) * 5]  # table, offset, mask, weight, bias: all float32


def test_autocast_on_bfloat16_inputs_follows_float32() -> None:
    # Inside an autocast network the layer's input is bfloat16 (the previous layer's output).
    x = _inputs(CASES[0], seed=3)["input"].bfloat16()
    torch.manual_seed(0)
    layer = DeformConv2d(8, 6)
    with torch.no_grad():
        layer.offset_conv.weight.normal_(0, 0.1)

    def step(autocast: bool) -> list[Tensor]:
        layer.zero_grad()
        leaf = (x if autocast else x.float()).detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, offset, mask = layer.forward_with_sampling(leaf)
        out.float().square().sum().backward()
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype
        branches = (layer.offset_conv.weight.grad, layer.mask_conv.weight.grad)
        assert layer.weight.grad is not None and None not in branches
        return [out, offset, mask, leaf.grad, layer.weight.grad, *branches]  # type: ignore[list-item]

    ref = step(autocast=False)
    out, offset, mask, *grads = step(autocast=True)
    assert out.dtype == torch.bfloat16
    # The offsets and mask, sampling positions, are float32 and exactly the float32 layer's.
    assert offset.dtype == mask.dtype == torch.float32
    assert torch.equal(offset, ref[1]) and torch.equal(mask, ref[2])
    # The rest to bfloat16 rounding, the gradients through the offsets included (with the
    # offsets in bfloat16 those were off by ~15 %: samples moved across cell edges).
    for name, a, b in zip(
        ("output", "input", "weight", "offset", "mask"),
        [out, *grads],
        [ref[0], *ref[3:]],
        strict=True,
    ):
        assert _relative_error(a, b) < 6e-3, name


@pytest.mark.parametrize("impl", ["fused", "generic"])
def test_autocast_without_gradients_or_fused_kernels_runs_float32(impl: str) -> None:
    tensors = _inputs(CASES[1], seed=5)
    args = [tensors[k] for k in ("input", "offset", "weight", "bias")]
    leaves = [t.detach().clone().requires_grad_() for t in args]
    with_grad = deform_conv2d(*leaves, padding=1, mask=tensors["mask"], _impl=impl).detach()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        no_grad = deform_conv2d(*args, padding=1, mask=tensors["mask"], _impl=impl)
    assert no_grad.dtype == torch.float32
    torch.testing.assert_close(no_grad, with_grad)  # float32 tolerances, not bfloat16's
    if impl == "generic":  # torchvision's autocast rule: the whole op in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            generic = deform_conv2d(*leaves, padding=1, mask=tensors["mask"], _impl=impl)
        assert generic.dtype == torch.float32
        torch.testing.assert_close(generic.detach(), with_grad)


@pytest.mark.parametrize("kind", ["cnn", "dcn"])
def test_network_forward_under_autocast_follows_float32(kind: str) -> None:
    torch.manual_seed(0)
    net = build_network(ModelSpec(kind=kind, in_channels=5, window=9, width=16))  # type: ignore[arg-type]
    x = torch.randn(24, 5, 9, 9)
    net.train()
    with torch.random.fork_rng(devices=[]):
        ref = net(x)
    with torch.random.fork_rng(devices=[]), training_autocast("bfloat16", "cpu"):
        mixed = net(x)
    assert mixed.dtype == torch.bfloat16
    assert 1e-4 < _relative_error(mixed.float(), ref) < 3e-2


# --------------------------------------------------------------------------------------------
# the setting


def test_auto_precision_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import gkdcn.runtime as runtime

    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: True)
    assert resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: False)
    assert resolve_precision("auto", "cpu") == "float32"
    assert runtime.native_bfloat16("meta") is False  # no probe for other devices: float32


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "vendor", "native"),
    [
        (True, True, "GenuineIntel", True),  # Sapphire Rapids and later, AMX exposed
        (False, True, "AuthenticAMD", True),  # Zen 4 and later
        (False, True, "GenuineIntel", False),  # AMX hidden (VMs) or Cooper Lake: slower
        (False, True, "", False),  # vendor unknown: float32, the safe side
        (False, False, "AuthenticAMD", False),  # no bfloat16 units: emulated
    ],
)
def test_native_bfloat16_on_a_cpu_means_faster_than_float32(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, vendor: str, native: bool
) -> None:
    import gkdcn.runtime as runtime

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(runtime, "cpu_vendor", lambda: vendor)
    assert runtime.native_bfloat16("cpu") is native
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native else "float32")


def test_cpu_vendor_reads_this_machine() -> None:
    from gkdcn.runtime import cpu_vendor

    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo on this machine")
    found = re.search(r"^vendor_id\s*:\s*(\S+)\s*$", info.read_text(), re.MULTILINE)
    assert cpu_vendor() == (found.group(1) if found else "")


def test_a_comparison_records_the_precision_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gkdcn.runtime as runtime

    config = tiny_comparison_config(tmp_path / "study", epochs=1, seeds=1)
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"precision": "auto"})}
    )
    study = load_study(config)
    plan = make_plan(config, models=["cnn"], protocols=["authors"])
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: False)
    on_plain = plan.on_device("cpu")
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: True)
    on_native = plan.on_device("cpu")
    assert (on_plain.train.precision, on_native.train.precision) == ("float32", "bfloat16")
    assert on_native.on_device("cpu") is on_native  # resolved once, then left alone
    # Runs of different arithmetic are different experiments: never resumed into each other.
    assert fingerprint(study, on_plain) != fingerprint(study, on_native)
    comparison = run_comparison(study, tmp_path / "run", plan)  # "auto" with native bfloat16
    assert comparison.plan.train.precision == "bfloat16"
    layout = RunLayout(tmp_path / "run")
    recorded = json.loads(layout.run_json.read_text())
    assert recorded["plan"]["train"]["precision"] == "bfloat16"
    bundle = ModelBundle.load(layout.model_file("cnn"))
    assert bundle.train_config["precision"] == "bfloat16"


def _small_fold():
    from test_training_recipe import _district  # the recipe tests' 40 x 40 district

    raw, _valid, knowledge, sites, grid, samples = _district()
    split = leave_one_deposit_out(samples, sites, grid, exclusion_radius=4000.0)[0]
    return prepare_windows(
        raw, ["a", "b", "c"], knowledge, samples, split, TransformConfig(method="log"), 7, "zero"
    )


@pytest.mark.parametrize("kind", ["cnn", "gk-dcn"])
def test_bfloat16_training_learns_and_records_its_precision(kind: str) -> None:
    data = _small_fold()
    cfg = dict(width=8, epochs=8, batch_size=16, patience=None, background_ratio=0.0)
    mixed = fit_network(kind, data, TrainConfig(**cfg, precision="bfloat16"), seed=1)  # type: ignore[arg-type]
    plain = fit_network(kind, data, TrainConfig(**cfg, precision="float32"), seed=1)  # type: ignore[arg-type]
    assert mixed.bundle.train_config["precision"] == "bfloat16"
    assert plain.bundle.train_config["precision"] == "float32"
    loss_mixed = mixed.history["train_loss"].to_numpy()
    loss_plain = plain.history["train_loss"].to_numpy()
    assert loss_mixed[-1] < loss_mixed[0]  # it learns
    # The same run to bfloat16 rounding: close (measured: within 1.1e-3 of BCE ~0.4-0.7 over
    # 8 epochs), but not identical, losses every epoch.
    assert np.abs(loss_mixed - loss_plain).max() < 1e-2
    assert not np.array_equal(loss_mixed, loss_plain)


def test_command_line_precision_is_recorded_and_checked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gkdcn.cli import app

    runner = CliRunner()
    root = tmp_path / "district"
    synth = ["synth", str(root), "--height", "40", "--width", "48", "--layers", "6"]
    made = runner.invoke(app, [*synth, "--deposits", "5"])
    assert made.exit_code == 0, made.output
    config = str(root / "study.toml")
    train = ["--threads", "1", "train", config, "-m", "dcn", "--epochs", "1"]
    done = runner.invoke(app, [*train, "--precision", "bfloat16", "--out", str(tmp_path / "m")])
    assert done.exit_code == 0, done.output
    bundle = ModelBundle.load(tmp_path / "m" / "model.pt")
    assert bundle.train_config["precision"] == "bfloat16"
    bad = runner.invoke(app, [*train, "--precision", "half", "--out", str(tmp_path / "n")])
    assert bad.exit_code == 2
    assert "precision" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "n").exists()
    bad = runner.invoke(
        app, ["compare", config, "--precision", "fp8", "--out", str(tmp_path / "r")]
    )
    assert bad.exit_code == 2 and "precision" in bad.output
    assert not (tmp_path / "r").exists()


def test_report_states_the_precision_and_reruns_with_it(tmp_path: Path) -> None:
    from gkdcn.report.commands import reproduce_commands
    from gkdcn.report.tables import plan_rows

    plan = {"models": ["dcn"], "seeds": [0], "train": {"epochs": 3, "precision": "bfloat16"}}
    training = dict(plan_rows(plan))["Training"]
    assert "bfloat16 mixed precision" in training
    assert "float32 arithmetic" in dict(plan_rows({"train": {"precision": "float32"}}))["Training"]
    command = reproduce_commands({}, plan, tmp_path / "run", tmp_path / "report.html")[0]
    assert "--precision bfloat16" in command


def test_stacked_seeds_train_in_bfloat16_too() -> None:
    from gkdcn.training.stacked import fit_networks

    data = _small_fold()
    cfg = TrainConfig(
        width=8, epochs=6, batch_size=16, patience=None, background_ratio=0.0, precision="bfloat16"
    )
    stacked = fit_networks("dcn", [data, data], cfg, [1, 2])
    solo = fit_network("dcn", data, cfg, seed=1)
    for result in stacked:
        assert result.bundle.train_config["precision"] == "bfloat16"
        losses = result.history["train_loss"].to_numpy()
        assert losses[-1] < losses[0]
    # The same member to bfloat16 rounding (grouped layers round in another order; measured
    # within 4e-4).
    first = stacked[0].history["train_loss"].to_numpy()
    assert np.abs(first - solo.history["train_loss"].to_numpy()).max() < 1e-2


def test_runs_from_before_the_setting_resume_and_other_arithmetic_is_named(
    tmp_path: Path,
) -> None:
    import hashlib

    from gkdcn.errors import GkdcnError

    config = tiny_comparison_config(tmp_path / "study", epochs=1, seeds=1)
    study = load_study(config)
    plan = make_plan(config, models=["cnn"], protocols=["lodo"], precision="float32")
    run = tmp_path / "run"
    run_comparison(study, run, plan)
    # The run as a gkdcn without the setting wrote it: no precision anywhere (nor the later
    # select_* and pretrain* settings), and its fingerprint (the old rule: a hash of config and plan) over
    # the rest.
    meta = json.loads((run / "run.json").read_text())
    del meta["config"]["train"]["precision"], meta["plan"]["train"]["precision"]
    for train in (meta["config"]["train"], meta["plan"]["train"]):
        for key in [k for k in train if k.startswith(("select_", "pretrain"))]:
            del train[key]
    blob = json.dumps({"config": meta["config"], "plan": meta["plan"]}, sort_keys=True)
    meta["fingerprint"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    (run / "run.json").write_text(json.dumps(meta))
    results = sorted(run.rglob("result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    run_comparison(study, run, plan)  # resumed: every job was done
    assert [p.stat().st_mtime_ns for p in results] == stamps
    bfloat16 = make_plan(config, models=["cnn"], protocols=["lodo"], precision="bfloat16")
    with pytest.raises(GkdcnError, match="trained in float32, and this one would train in bfl"):
        run_comparison(study, run, bfloat16)
