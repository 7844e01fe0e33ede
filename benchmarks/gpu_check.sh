#!/usr/bin/env bash
# GPU check of graph pretraining, for a machine with one CUDA GPU (docs/distributed.md, "GPUs").
#
#   bash benchmarks/gpu_check.sh            # writes gpu_check.log and gpu_speed.json to $OUT (else ./gpu_check_out)
#
# 1. Prints the environment (python, torch and its CUDA, the GPU).
# 2. Makes molwm importable from this checkout (PYTHONPATH; nothing is built) and installs the
#    dependencies the machine lacks. A machine that reaches no package registry needs them carried
#    as wheels in .whl/ (molwm's own venv has the versions that are known to work), made beforehand on
#    a machine with pip, for the GPU machine's Python (3.12 here):
#      echo /.whl/ >> .git/info/exclude
#      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#          -d .whl rdkit==<version>
#    (usually rdkit alone is missing; mlflow is not needed: the tests and the timing log nowhere).
# 3. Runs the CUDA tests (tests/molwm/train/test_device.py and test_device_mm.py): each graph objective
#    and a world model train a few steps on cuda (graph: with probes and health), the first loss matches
#    a CPU run, the checkpoint loads on the CPU.
# 4. Times 50 steps of single-process pretraining (the tiny config, and a graph_jepa-sized model) on
#    cuda and on the CPU, same data and settings, and prints steps/s of each.
# torchrun with one process is the single-process path (WORLD_SIZE=1), so NCCL needs >= 2 GPUs and is
# not exercised here.

set -uo pipefail
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== environment"
uname -m; nproc
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not available"
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable);
print("torch", torch.__version__, "cuda build", torch.version.cuda, "cuda available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'

echo "== dependencies"
missing=()
for spec in rdkit:rdkit torch_geometric:torch-geometric einops:einops yaml:pyyaml pandas:pandas tqdm:tqdm \
            sklearn:scikit-learn matplotlib:matplotlib pyarrow:pyarrow pytest:pytest pytest_timeout:pytest-timeout; do
  mod=${spec%%:*}; pkg=${spec##*:}
  if "$PY" -c "import $mod" 2>/dev/null; then
    echo "have $pkg $("$PY" -c "from importlib.metadata import version; print(version('$pkg'))" 2>/dev/null)"
  else
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}"
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  else
    timeout 120 "$PY" -m pip install -q "${missing[@]}" \
      || echo "could not install ${missing[*]}: no package registry reachable and no .whl/ carried (see the header)"
  fi
fi
"$PY" -c 'import rdkit, torch_geometric, molwm, featurizers; print("molwm importable from", molwm.__file__)' \
  || { echo "molwm cannot be imported here; stopping"; exit 2; }
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "no CUDA device visible to torch; stopping"; exit 3; }

echo "== CUDA tests"
timeout 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/molwm/train/test_device.py tests/molwm/train/test_device_mm.py
echo "pytest exit code $?"

echo "== pretraining speed, one process: cuda vs cpu"
timeout 300 "$PY" - "$OUT" <<'EOF'
import hashlib, json, os, sys, tempfile, time
from pathlib import Path

import torch

from molwm.config import load_config
from molwm.train.pretrain import PretrainConfig, run_pretrain

out = Path(sys.argv[1])
work = Path(tempfile.mkdtemp(prefix="molwm-gpu-"))
# ~1,100 small drug-like molecules made from fragments (no dataset package needed)
left = ["", "C", "CC", "CCC", "CO", "CN", "CC(C)", "ClC", "FC", "OC(=O)C", "NC(=O)C", "CSC"]
core = ["c1ccccc1", "C1CCNCC1", "c1ccncc1", "C1CCOC1", "c1ccc2ccccc2c1", "C1CCCCC1", "c1ccsc1", "c1cnc[nH]1"]
right = ["", "C", "O", "N", "Cl", "F", "C(=O)O", "C(=O)N", "CC", "OC", "C#N", "S"]
smiles = sorted({a + c + b for a in left for c in core for b in right})
csv = work / "mols.csv"
csv.write_text("smiles\n" + "\n".join(smiles) + "\n")
cards = work / "cards"
cards.mkdir()
(cards / "gpumols.yaml").write_text(
    "name: gpumols\nsource:\n  kind: local\n  files:\n    - path: ../mols.csv\n"
    f"      sha256: {hashlib.sha256(csv.read_bytes()).hexdigest()}\n"
    "columns:\n  smiles: smiles\ntask:\n  type: unlabelled\nlicense: CC0-1.0\ncitation: generated\n")
os.environ["MOLWM_DATASETS"] = str(cards)
print(f"{len(smiles)} molecules; CPU threads {torch.get_num_threads()}; GPU {torch.cuda.get_device_name(0)}")

sizes = {
    "tiny": ("configs/pretrain/tiny.yaml", ["batch_size=32"]),
    "graph_jepa": ("configs/pretrain/graph_jepa.yaml", ["batch_size=256"]),
}
rows = []
for size, (path, extra) in sizes.items():
    for objective in ("jepa", "generative", "contrastive"):
        for device in ("cuda", "cpu"):
            cfg = load_config(PretrainConfig, path, [
                "dataset=gpumols", "limit=null", f"objective={objective}", f"device={device}", "max_steps=50",
                "warmup_steps=5", "log_every=10", "health_every=1000", "checkpoint_every=1000",
                f"out_dir={work / f'{size}-{objective}-{device}'}", f"cache_dir={work / 'cache'}", *extra])
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            r = run_pretrain(cfg, progress=False)
            wall = time.perf_counter() - t0
            w = dict(r.history["wall_seconds"])  # training seconds at steps 9, 19, ..., 49
            row = {"size": size, "objective": objective, "device": device, "batch_size": cfg.batch_size,
                   "steps": r.steps, "final_loss": r.final_loss,
                   "first_10_steps_s": w[9], "steps_per_s": 40 / (w[49] - w[9]),
                   "graphs_per_s": 40 * cfg.batch_size / (w[49] - w[9]), "run_wall_s": wall,
                   "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}
            rows.append(row)
            print(json.dumps(row))

print(f"\n{'config':11} {'objective':12} {'batch':>5} {'cuda steps/s':>12} {'cpu steps/s':>11} {'speed-up':>8}")
for size in sizes:
    for objective in ("jepa", "generative", "contrastive"):
        g, c = (next(x for x in rows if (x["size"], x["objective"], x["device"]) == (size, objective, d))
                for d in ("cuda", "cpu"))
        print(f"{size:11} {objective:12} {g['batch_size']:>5} {g['steps_per_s']:12.1f} {c['steps_per_s']:11.1f} "
              f"{g['steps_per_s'] / c['steps_per_s']:7.1f}x")
(out / "gpu_speed.json").write_text(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                                "cpu_threads": torch.get_num_threads(), "rows": rows}, indent=1))
EOF
echo "timing exit code $?"
