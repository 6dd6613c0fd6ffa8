#!/usr/bin/env bash
# Every benchmark on a GPU machine, one JSON: bench/results/gpu.json (and each script's own).
#
#     bash bench/run_gpu.sh [PYTHON]        # from the repository root; PYTHON defaults to python3
#
# Each bench_*.py runs with --device cuda (on a machine without a CUDA GPU they say so and run on
# the CPU; the "device" in every JSON is the one really used). The Tianshan parts need the data at
# ../shared/data/tianshan (beside the checkout) or BENCH_DATA=<folder of its release>; without it
# they are skipped.
# The comparison benchmark runs the fixed small plan (on a synthetic 60-deposit district when the
# Tianshan data is absent) with this checkout only, unless
# BENCH_AGAINST=<commit> names an earlier commit to compare with in the same run.
set -u
cd "$(dirname "$0")/.."
PY="${1:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=bench/results/gpu
mkdir -p "$OUT"
DATA="${BENCH_DATA:-$PWD/../shared/data/tianshan}"  # beside the checkout, as in CI
status=0
run() {  # name, command...
    local name=$1
    shift
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok ($((SECONDS - t0)) s)"; else
        echo "   FAILED ($((SECONDS - t0)) s), see $OUT/$name.log"
        status=1
    fi
    tail -n 25 "$OUT/$name.log"
}
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$OUT/env.txt"
run deform "$PY" bench/bench_deform.py --device cuda --out "$OUT/deform.json"
run models "$PY" bench/bench_models.py --device cuda --out "$OUT/models.json"
run predict "$PY" bench/bench_predict.py --device cuda --data "$DATA/Geochemical_data" \
    --batch-size 8192 --block-rows 256 --max-cells 0 --out "$OUT/predict.json"
against=()
[ -n "${BENCH_AGAINST:-}" ] && against=(--against "$BENCH_AGAINST")
where=(--data-dir "$DATA")
[ -d "$DATA" ] || where=(--synthetic 60)  # no Tianshan data here: a synthetic 60-deposit district
run compare "$PY" bench/bench_compare.py --device cuda "${where[@]}" --jobs 1 \
    "${against[@]}" --out "$OUT/compare.json"
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
merged = {"env": (out / "env.txt").read_text().strip()}
for name in ("deform", "models", "predict", "compare"):
    path = out / f"{name}.json"
    merged[name] = json.loads(path.read_text()) if path.exists() else None
(out.parent / "gpu.json").write_text(json.dumps(merged, indent=2))
print(f"one JSON: {out.parent / 'gpu.json'}")
PY
exit $status
