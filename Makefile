# `make demo` and `make test` create .venv when missing, install what they need, and run.
# TORCH_SPEC pins the CPU build of torch used on our machines and CI; on your own machine
# `make test TORCH_SPEC=torch` takes whatever build pip picks for it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

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
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) runs
