# Two commands do everything (README.md):  make lab   |   make test
# Set-up is idempotent: the venv is (re)installed only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU build of PyTorch unless a CUDA driver is present (README: "GPU set-up").
TORCH      ?= torch==2.13.0
TORCH_INDEX ?= $(shell if [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then echo https://download.pytorch.org/whl/cpu; fi)
CHAPTERS   := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
NOTEBOOKS  := $(CHAPTERS:.py=.ipynb)
# make nb runs one chapter under nbval in this profile (smoke, cpu or gpu); its time budget
# in that profile comes from docs/times.json (root conftest.py)
PROFILE    ?= smoke
CELL_TIMEOUT ?= $(if $(filter smoke,$(PROFILE)),300,1800)
# where make course writes the executed chapters; results go to $(CRATE_BUILD)/results
CRATE_BUILD ?= $(CURDIR)/build
COURSE_OUT ?= $(CRATE_BUILD)/course
export CRATE_DATA ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),)

.PHONY: setup lab lint test test-unit test-notebooks nb notebooks course student results clean help

help:
	@echo "make lab      set up (first time) and open JupyterLab on chapters/"
	@echo "make test     set up (first time), lint, run unit tests and every chapter (smoke profile), check the smoke website"
	@echo "make lint     ruff format --check and ruff check over code, tests and chapters"
	@echo "make course   run every chapter (default profile) into build/, with HTML"
	@echo "make student  write student versions into build/student/"
	@echo "make site     the course as a static website in build/site/html/, from make course's notebooks"
	@echo "make site-smoke   the same, every chapter executed in the smoke profile first (minutes; build/site-smoke/)"
	@echo "make site-check [SITE=build/site/html]   check a built site in headless Chromium (default: a smoke build; part of make test)"
	@echo "make grade SUBMISSIONS=dir [JOBS=2] [CH=02_coding_rate]   grade a folder of notebooks into build/grades/"
	@echo "make nbgrader  the chapters as an nbgrader course in build/nbgrader/"
	@echo "make nb CH=02_coding_rate   run one chapter under nbval (smoke profile; PROFILE=cpu for cpu)"
	@echo "make gpu-check   run the gpu profile's code paths on the CPU, a few steps each (part of make test)"
	@echo "make gpu-profile [SHORT=1]   on a GPU: every GPU chapter's gpu profile and configs/*_gpu.toml runs"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/pip install --retries 1 --timeout 20 "$(TORCH)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install -e .
	@touch $@

lab: $(STAMP) notebooks-config
	cd chapters && ../$(BIN)/jupyter lab --ServerApp.root_dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

.PHONY: notebooks-config
notebooks-config: $(STAMP)
	@# open .py chapters as notebooks by default (jupytext's default viewer); no news or update prompt
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}},' \
	  ' "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
	  > $(VENV)/share/jupyter/lab/settings/overrides.json

chapters/%.ipynb: chapters/%.py $(STAMP)
	@$(BIN)/jupytext --quiet --to ipynb $< -o $@

notebooks: $(NOTEBOOKS)

test: lint test-unit gpu-check test-notebooks site-check

# ruff: formatting and a small rule set (pyproject.toml [tool.ruff]) over everything we write
LINT_PATHS := crate_lite tests scripts benchmarks chapters docs conftest.py
lint: $(STAMP)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)

test-unit: $(STAMP) browser-setup
	$(BIN)/python -m pytest tests -q

# tests/test_browser.py drives headless Chromium (`python tests/browser.py` names the one it finds).
# None found: install Debian's package where apt-get can (as root: containers, CI); never fails the build.
.PHONY: browser-setup
browser-setup:
	@$(PYTHON) tests/browser.py >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "no Chromium: installing Debian's chromium package for tests/test_browser.py"; \
	    install="env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium"; \
	    $$install || { timeout 300 apt-get update -q && $$install; } || \
	    echo "could not install chromium: tests/test_browser.py will be skipped"; \
	  else echo "no Chromium (as root with apt-get, make browser-setup installs it): tests/test_browser.py will be skipped"; fi; }

# every gpu-profile code path of scripts/train.py on the CPU, a few steps each (configs/*_gpu.toml,
# bf16 autocast, DataLoader workers, torchrun over gloo): 45 s on a 2-core machine (2026-11-30)
.PHONY: gpu-check gpu-profile
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py

# on a GPU machine: the gpu profile of every GPU chapter and every configs/*_gpu.toml run, results and
# logs under build/gpu/; SHORT=1: the short mode (all within 12 minutes on one H200-class GPU), build/gpu-short/
gpu-profile: $(STAMP) $(NOTEBOOKS)
	$(BIN)/python scripts/gpu_profile.py $(if $(SHORT),--short)

# smoke-profile results go to build/smoke/ so they never overwrite a real run's; the executed notebooks are
# kept in build/smoke/executed/ (scripts/site_outputs.py) for the smoke website of make site-check
test-notebooks: export PYTEST_ADDOPTS := $(PYTEST_ADDOPTS) -p scripts.site_outputs
test-notebooks: $(STAMP) $(NOTEBOOKS)
	CRATE_PROFILE=smoke CRATE_BUILD=$(CURDIR)/build/smoke $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=$(CELL_TIMEOUT) $(NOTEBOOKS)

nb: $(STAMP) chapters/$(CH).ipynb
	CRATE_PROFILE=$(PROFILE) CRATE_BUILD=$(CURDIR)/build/$(PROFILE) $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=$(CELL_TIMEOUT) chapters/$(CH).ipynb

course: $(STAMP) $(NOTEBOOKS)
	@mkdir -p $(COURSE_OUT)
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
	  --output-dir $(COURSE_OUT) $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to html --output-dir $(COURSE_OUT) $(addprefix $(COURSE_OUT)/,$(notdir $(NOTEBOOKS)))
	CRATE_BUILD=$(CRATE_BUILD) $(BIN)/python -m crate_lite.results
	$(BIN)/python docs/times.py compare $${CRATE_PROFILE:-cpu} $(COURSE_OUT)

student: $(STAMP)
	$(BIN)/python -m crate_lite.classroom student $(CHAPTERS) --out build/student

# the course website (scripts/site_build.py, docs/site/conf.py; docs/teaching.md, section 5): Sphinx + MyST-NB
# reading the py:percent chapters, with their outputs from make course's notebooks (make site) or from
# running every chapter in the smoke profile (make site-smoke); works offline (local MathJax, no CDN)
SITE_OUT ?= build/site
SMOKE_SITE_OUT ?= build/site-smoke
.PHONY: site site-smoke site-check
site: $(STAMP)
	$(BIN)/python scripts/site_build.py --from $(COURSE_OUT) --out $(SITE_OUT)

# runs only the chapters that make test-notebooks has not just executed (build/smoke/executed: scripts/site_outputs.py)
site-smoke: $(STAMP)
	$(BIN)/python scripts/site_build.py --profile smoke --prefer $(CURDIR)/build/smoke/executed --out $(SMOKE_SITE_OUT)

# every page in headless Chromium from a local server (tests/test_site.py): math typeset, figures loaded,
# internal links resolve, nothing loaded from another host; screenshots in build/site-check/.
# SITE=folder checks a site built before (make site: SITE=build/site/html); without it, a smoke build first
site-check: $(STAMP) browser-setup $(if $(SITE),,site-smoke)
	CRATE_SITE=$(abspath $(or $(SITE),$(SMOKE_SITE_OUT)/html)) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_site.py

# grading (docs/teaching.md): a folder of submissions against the chapters their file names name
SUBMISSIONS ?= submissions
JOBS ?= 1
GRADE_OUT ?= build/grades
.PHONY: grade grade-check nbgrader
grade: $(STAMP)
	$(BIN)/python scripts/grade.py $(SUBMISSIONS) --out $(GRADE_OUT) --jobs $(JOBS) $(if $(CH),--source chapters/$(CH).py)

# every chapter's own solution notebook gets full marks from the grader, its student version 0 (minutes)
grade-check: $(STAMP)
	CRATE_GRADE_ALL=1 $(BIN)/python -m pytest tests/test_classroom.py -q -k "every_chapter_solution"

# an nbgrader course folder in build/nbgrader; its release/ too when nbgrader is installed (pip install -e '.[nbgrader]')
nbgrader: $(STAMP)
	$(BIN)/python -m crate_lite.classroom nbgrader $(CHAPTERS) --course build/nbgrader
	@if $(BIN)/python -c "import nbgrader" 2>/dev/null; then \
	  cd build/nbgrader && for ch in $$(ls source); do \
	    PATH=$(abspath $(BIN)):$$PATH $(abspath $(BIN))/python -m nbgrader generate_assignment $$ch --force || exit 1; done; \
	else echo "nbgrader is not installed ($(BIN)/pip install -e '.[nbgrader]'): wrote build/nbgrader/source only"; fi

results: $(STAMP)
	$(BIN)/python -m crate_lite.results

clean:
	rm -rf build chapters/*.ipynb .pytest_cache
