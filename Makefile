# mmapp: `make app` runs the app on the default checkpoints, `make test` runs the tests.
# Both create the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test bench setup defaults clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

app: $(STAMP)
	GRADIO_ANALYTICS_ENABLED=False $(PY) app.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run

# Regenerate the shapes data, extract features and retrain both default checkpoints (see README).
defaults: $(STAMP)
	bash scripts/train_defaults.sh

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
