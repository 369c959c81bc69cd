# cxrdet: `make demo` and `make test` set up .venv themselves when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrdet-installed
DATASET ?= vinbigdata
export YOLO_OFFLINE := 1

.PHONY: setup test test-slow test-all demo browser dicom3tools dcmtk orthanc bench bench-recipes clean mutation mutation-recheck

# Idempotent: re-runs pip only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first, in their own command (the only pair that runs ultralytics here)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -m "not slow" --timeout=900

# The tests marked `slow` (whole cv runs, Dask clusters with models in every worker, the demo, the
# headless-Chromium pages): each takes 10-100 s. CI runs them after the default suite (.ci/run).
test-slow: setup
	$(PY) -m pytest -q -m slow --timeout=1800 || [ $$? -eq 5 ]

# Both, as CI runs them.
test-all: test test-slow

demo: setup
	$(VENV)/bin/cxrdet demo $(DATASET)

# Headless Chromium + its WebDriver for the HTML report and explorer tests (Debian packages
# chromium and chromium-driver, same version; needs root or sudo).
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver >/dev/null; fi; }

# Debian's dicom3tools: dciodvfy, the DICOM validator tests/test_export_sr.py runs on the SRs and GSPS
# that `cxrdet export-sr` writes (the test skips with a reason without it; needs root or sudo).
dicom3tools:
	@command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dicom3tools >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq dicom3tools >/dev/null; fi; }

# Debian's DCMTK: dcm2pnm, the C++ toolkit bench/convert.py compares cxrdet convert with (it skips DCMTK
# with a note without it), the independent decoder of tests/test_dicom_round3.py's HighBit and NumberOfFrames
# cases, and dsrdump for the export-sr test (each skips with a reason without it; needs root or sudo).
dcmtk:
	@command -v dcm2pnm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dcmtk >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq dcmtk >/dev/null; fi; }

# Debian's Orthanc PACS + its DICOMweb plugin for the PACS round trip of tests/test_pacs.py (which starts
# its own Orthanc on 127.0.0.1; on a systemd machine the package also starts its own service on port 8042).
orthanc:
	@{ command -v Orthanc || test -x /usr/sbin/Orthanc; } >/dev/null 2>&1 && \
	  test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; fi; }

bench: setup
	$(PY) bench/convert.py && $(PY) bench/fuse.py && $(PY) bench/metric.py && $(PY) bench/explore.py \
	  && $(PY) bench/infer.py --weights weights/vinbig_phantom_yolo11n.pt && $(PY) bench/classify.py && bash bench/demo.sh && $(PY) bench/tune.py \
	  && $(PY) bench/families.py

# the training recipes on phantoms (issue 27): trains 4 cross-validations + 3 classifiers, ~40 min on 2 shared CPU cores
bench-recipes: setup
	$(PY) bench/recipes.py

# Mutation testing (mutmut 3; scope and reasons in pyproject's [tool.mutmut]); not part of CI or `make test`.
# Covers the functions that compute numbers, pixels and written files in boxes, fusion, dicom/voi, folds,
# export, metrics, submission and postprocess: about 6,200 mutants. Time: a fresh run measured 16 minutes
# wall, 30 CPU-minutes, on this machine's 2 cores with nothing else running (set-up: copy and mutate the
# sources, one coverage and one timing run of the selected tests, then ~0.25 CPU seconds per mutant);
# 2-3 times that beside other jobs. mutation.log keeps the wall and CPU time of the last run. It resumes where a killed run
# stopped; after a source change tools/mutation_sync.py drops the changed files' copies (which mutmut
# itself would keep) and, for a module in the scope, its verdicts, so that module runs again in full.
# `rm -rf mutants` starts afresh, and `make mutation-recheck` re-runs the surviving mutants (after adding
# tests). Prints the score per module.
mutation: setup
	$(PY) tools/mutation_sync.py
	@echo "mutation started: $$(date -u +%FT%TZ) load $$(cut -d' ' -f1-3 /proc/loadavg)" > mutation.log; \
	  t0=$$(date +%s); \
	  nice -n 10 $(VENV)/bin/mutmut run --max-children 2 >> mutation.log 2>&1 || { tail -20 mutation.log; exit 1; }; \
	  times > mutation.times; \
	  echo "mutation cpu (user sys of mutmut and its workers): $$(tail -1 mutation.times)" >> mutation.log; \
	  rm -f mutation.times; \
	  echo "mutation finished: $$(date -u +%FT%TZ) load $$(cut -d' ' -f1-3 /proc/loadavg)" >> mutation.log; \
	  echo "mutation wall_s: $$(( $$(date +%s) - t0 ))" >> mutation.log
	$(PY) tools/mutation_score.py -v

mutation-recheck: setup
	$(PY) tools/mutation_sync.py
	names="$$($(PY) tools/mutation_score.py --names)"; test -z "$$names" || \
	  nice -n 10 $(VENV)/bin/mutmut run --max-children 2 $$names > mutation-recheck.log 2>&1 || { tail -20 mutation-recheck.log; exit 1; }
	$(PY) tools/mutation_score.py -v

clean:
	rm -rf $(VENV) runs .pytest_cache
