# Quick start: `make demo` (set up what the demo needs, then run the demo flow) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
# what `make test` needs: everything (the test, bench, ui, uitest and ray extras, PostgreSQL,
# Chromium); what `make demo` needs: docpipe, its plugins and Tesseract
STAMP := $(VENV)/.docpipe-setup
DEMO_STAMP := $(VENV)/.docpipe-setup-demo
SETUP_INPUTS := pyproject.toml constraints.txt scripts/setup.sh scripts/system-packages.txt \
	scripts/system-packages-test.txt $(wildcard plugins/*/pyproject.toml)

.PHONY: setup setup-demo demo test lint bench clean models

setup: $(STAMP)
setup-demo: $(DEMO_STAMP)

$(STAMP): $(SETUP_INPUTS)
	VENV=$(VENV) EXTRAS=test,bench,ui,uitest,ray bash scripts/setup.sh
	touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): $(SETUP_INPUTS)
	VENV=$(VENV) EXTRAS= bash scripts/setup.sh
	touch $@

# The demo flow has a corrupt sample on purpose: it fails cleanly (exit status 1) while the
# other documents succeed, so status 1 is expected here; 2 (invalid flow) or worse is not.
# The encrypted sample's password comes from the environment, the way production passes it.
# models docpipe builds itself from committed data (offline, deterministic): see models/README.md
# `make models REVIEWS=reviews.jsonl` rebuilds models/doctype with the reviewed examples of
# `docpipe review export` too (docs/review.md, "Retraining with reviews")
models: $(DEMO_STAMP)
	@if [ -n "$(REVIEWS)" ]; then $(BIN)/python models/build_doctype.py --with-reviews "$(REVIEWS)"; \
	else [ -f models/doctype/model.safetensors ] || $(BIN)/python models/build_doctype.py; fi

demo: $(DEMO_STAMP) models
	rm -f results.csv
	DOCPIPE_PDF_PASSWORD=docpipe $(BIN)/docpipe run flows/idp.json samples/ --out results.csv --summary \
	  || [ $$? -eq 1 ]
	@echo "results.csv: $$(($$(wc -l < results.csv) - 1)) documents"

lint: setup
	$(BIN)/ruff check docpipe plugins examples tests benchmarks
	$(BIN)/mypy docpipe $(dir $(wildcard plugins/*/docpipe_*/__init__.py)) examples/docpipe-hello/docpipe_hello

test: setup lint models
	DOCPIPE_TEST_STRICT=1 $(BIN)/python -m pytest -q -n 2

bench: setup
	$(BIN)/python benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV) .docpipe results.csv .pytest_cache .mypy_cache .ruff_cache
