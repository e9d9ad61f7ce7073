# `make demo`, `make test` and `make bench` create .venv when missing, install what they need, and run.
# TORCH_SPEC is the torch that `make` installs when .venv has none: torch==2.13.0, the version
# CI tests. On our machines and CI pip resolves it to the CPU build from a local wheel; elsewhere
# pip picks the default build for the platform (on Linux that is the large CUDA build). Pass
# e.g. `make test TORCH_SPEC=torch` to take any version pip picks.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PEERS ?= .venv-peers

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m metakit.cli train sinusoid --out runs/demo --resume \
		--set train.iterations=20000 --set eval.steps=[0,1,10]
	@echo "adaptation plot: runs/demo/adaptation.png   learning curve: runs/demo/learning_curve.png"

test: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto  # one single-threaded worker a core: small ops run fastest so

$(PEERS)/.installed:
	bash benchmarks/peers_env.sh $(PEERS) "$(TORCH_SPEC)"
	touch $@

# parallel-metalearn here (numpy >= 2); learn2learn, higher and TorchOpt in $(PEERS) (numpy < 2)
bench: $(VENV)/.installed $(PEERS)/.installed
	$(PY) -m pip install -q -e ".[test,bench]"
	$(PY) benchmarks/speed.py --peer-python $(PEERS)/bin/python

clean:
	rm -rf $(VENV) $(PEERS) runs
