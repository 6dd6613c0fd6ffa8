"""Several seeds of one network trained at once, as one stacked model (``--stack-seeds``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from rich.progress import Progress

from gkdcn.config import TrainConfig
from gkdcn.errors import GkdcnError
from gkdcn.models.stacked import StackedNet, stack_networks
from gkdcn.runtime import resolve_precision, training_autocast
from gkdcn.training.loop import (
    Tracker,
    TrainResult,
    build_model,
    evaluate_windows,
    network_spec,
    package_result,
    progress_info,
    resolved_config,
)
from gkdcn.training.stream import Stream
from gkdcn.training.windows import PreparedWindows


def fit_networks(
    kind: str,
    data: Sequence[PreparedWindows],
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str | None = None,
) -> list[TrainResult]:
    """Train one network per seed at once, as one stacked model; one result per seed.

    ``data[i]`` are seed ``i``'s prepared windows (e.g. its own background pool); all must have
    the same number of training windows, channels and window size. Each member is initialised,
    shuffled, augmented, given background and dropout masks exactly as :func:`fit_network` with
    its seed would, and stops early on its own validation set, so each result equals
    ``fit_network(kind, data[i], cfg, seed=seeds[i])`` up to floating-point rounding (the
    grouped layers sum in another order). Every step runs the members' layers as one grouped
    layer (:class:`gkdcn.models.stacked.StackedNet`): fewer, larger kernels, which pays where
    per-kernel overhead dominates; on a 2-core CPU it measured no gain per CPU-second (README,
    Benchmarks), so ``gkdcn compare`` stacks only with ``--stack-seeds``.
    """
    if len(data) != len(seeds) or not seeds:
        raise GkdcnError(f"fit_networks needs one prepared fold per seed, got {len(data)}")
    specs = [network_spec(kind, d, cfg) for d in data]
    if any(spec != specs[0] for spec in specs) or len({len(d.train) for d in data}) != 1:
        raise GkdcnError("stacked trainings need folds of one shape (windows, channels, size)")
    spec = specs[0]
    cfg = resolved_config(cfg, device)
    with torch.random.fork_rng(devices=[]):
        nets, criteria, rng_states = [], [], []
        for seed in seeds:
            torch.manual_seed(seed)
            net, criterion = build_model(spec, cfg, device)
            nets.append(net)
            criteria.append(criterion)
            # What the solo run's dropout draws from next.
            rng_states.append(torch.get_rng_state())
        stacked = stack_networks(nets)  # type: ignore[arg-type]
        stacked.dropout_states = rng_states
        params = list(stacked.parameters()) + [p for c in criteria for p in c.parameters()]
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        streams = [
            Stream(d, cfg, c, torch.Generator().manual_seed(seed), device, seed)
            for d, c, seed in zip(data, criteria, seeds, strict=True)
        ]
        trackers = _stacked_loop(
            stacked, criteria, optimiser, streams, cfg, device, progress, label or kind
        )
    results = []
    for index, (tracker, d, seed) in enumerate(zip(trackers, data, seeds, strict=True)):
        net = nets[index]
        net.load_state_dict(tracker.net_state)
        criteria[index].load_state_dict(tracker.criterion_state)
        results.append(
            package_result(spec, net, criteria[index], d, cfg, seed, device, tracker.history,
                    tracker.best_epoch)
        )  # fmt: skip
    return results


def _stacked_loop(
    net: StackedNet,
    criteria: list[torch.nn.Module],
    optimiser: torch.optim.Optimizer,
    streams: list[Stream],
    cfg: TrainConfig,
    device: str,
    progress: Progress | None,
    label: str,
) -> list[Tracker]:
    """The epochs of :func:`gkdcn.training.loop.fit_network` for every member of ``net`` at once.

    Members that stopped early keep training with the rest, but their histories and best
    states no longer change.
    """
    size = len(streams)
    has_val = [len(s.data.val) > 0 for s in streams]
    autocast = training_autocast(resolve_precision(cfg.precision, device), device)

    def snapshot(index: int) -> Any:
        return lambda: (net.member_state(index), copy.deepcopy(criteria[index].state_dict()))

    trackers = []
    for index in range(size):
        net_state, criterion_state = snapshot(index)()
        trackers.append(Tracker(net_state, criterion_state, history=[]))
    task = progress.add_task(label, total=cfg.epochs, info="") if progress is not None else None
    starts = streams[0].starts()
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        for stream in streams:
            stream.new_epoch()
        totals, correct = _stacked_epoch(net, optimiser, streams, starts, autocast)
        for k, (stream, tracker) in enumerate(zip(streams, trackers, strict=True)):
            if not tracker.stopped:
                row = _epoch_row(net, k, stream, epoch, totals[k], correct[k], device)
                tracker.record(row, has_val[k], cfg.patience, snapshot(k))
        if progress is not None and task is not None:
            progress.update(
                task, advance=1, info=progress_info(trackers[0].history[-1], has_val[0])
            )
        if all(t.stopped for t in trackers):
            break
    if progress is not None and task is not None:
        progress.update(task, completed=cfg.epochs)
    return trackers


def _stacked_epoch(
    net: StackedNet,
    optimiser: torch.optim.Optimizer,
    streams: list[Stream],
    starts: list[int],
    autocast: torch.autocast,
) -> tuple[list[float], list[int]]:
    """One epoch's training steps of every member: each member's summed loss and right count."""
    size = len(streams)
    totals = [0.0] * size
    correct = [0] * size
    for i, start in enumerate(starts):
        drawn = [stream.batch(i, start) for stream in streams]
        if drawn[0] is None:  # the same batch sizes in every member
            continue
        batches = [d[1] for d in drawn if d is not None]
        xb = torch.cat([d[0] for d in drawn if d is not None], dim=1)
        with autocast:
            all_logits = net(xb).float()
        losses, logits = [], []
        for k, stream in enumerate(streams):
            loss, member_logits = stream.loss(i, batches[k], all_logits[k])
            losses.append(loss)
            logits.append(member_logits)
        optimiser.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        optimiser.step()
        for k, stream in enumerate(streams):
            totals[k] += losses[k].item() * len(batches[k])
            correct[k] += stream.correct(batches[k], logits[k])
    return totals, correct


def _epoch_row(
    net: StackedNet,
    index: int,
    stream: Stream,
    epoch: int,
    total: float,
    correct: int,
    device: str,
) -> dict[str, Any]:
    """Member ``index``'s history row of ``epoch`` (validation scores when it has a val set)."""
    row: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": total / stream.n,
        "train_accuracy": correct / stream.n,
    }
    if len(stream.data.val) > 0:
        row.update(evaluate_windows(net.member(index), stream.data.val, device))
    return row
