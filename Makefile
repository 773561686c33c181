# dynseg: `make demo` and `make test` set everything up from nothing (python3 + package registries).
PYTHON      ?= python3
VENV        := .venv
UV_VERSION  := 0.13.8
UV          := $(VENV)/bin/uv
DYNSEG      := $(VENV)/bin/dynseg
DEMO_CUSTOMERS ?= 20000
DEMO_END    ?= 2026-11-27
DEMO_PREV   ?= 2026-11-26
DEMO_CAMPAIGN ?= 2026-08-31
DEMO_DRIFT_FROM ?= 2026-10-31
export UV_PROJECT_ENVIRONMENT := $(VENV)
export OMP_WAIT_POLICY := passive
# Byte-compile on install: this machine sets PYTHONDONTWRITEBYTECODE, so without it every
# command would recompile mlflow, sklearn, evidently... on each start (seconds per command).
export UV_COMPILE_BYTECODE := 1

.PHONY: demo test env env-dev env-spark java clean-demo notebooks env-notebooks

# Core environment: pinned by uv.lock (no dev tools, no Spark).
$(VENV)/.core-installed: uv.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --inexact --no-dev
	@touch $@

# Test environment: the same lock plus the dev group and the spark extra.
$(VENV)/.dev-installed: $(VENV)/.core-installed
	$(UV) sync --frozen --inexact --extra spark --group dev
	@touch $@

# The spark extra alone (pyspark), for the spark profile after `make demo`.
$(VENV)/.spark-installed: $(VENV)/.core-installed
	$(UV) sync --frozen --inexact --extra spark --no-dev
	@touch $@

# The notebooks extra (JupyterLab), for `make notebooks`.
$(VENV)/.notebooks-installed: $(VENV)/.core-installed
	$(UV) sync --frozen --inexact --extra notebooks --no-dev
	@touch $@

env: $(VENV)/.core-installed
env-dev: $(VENV)/.dev-installed
env-spark: java $(VENV)/.spark-installed

# The review notebooks in JupyterLab (on 127.0.0.1 only; open the URL it prints). Run `make demo`
# first, or set DYNSEG_PROJECT to your project: the notebooks read its workspace.
# JupyterLab and nbconvert without starting a server (to run notebooks headless).
env-notebooks: $(VENV)/.notebooks-installed

notebooks: $(VENV)/.notebooks-installed
	DYNSEG_PROJECT=$${DYNSEG_PROJECT:-$(CURDIR)} $(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser \
	  --ServerApp.root_dir=$(CURDIR)/notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

demo: env
	# A shop whose behaviour drifts from November on (for monitoring to find); --force: the demo's
	# own files in .dynseg/data, also those of a version before generated files were marked.
	$(DYNSEG) data generate --customers $(DEMO_CUSTOMERS) --seed 7 --end $(DEMO_END) \
	  --drift-from $(DEMO_DRIFT_FROM) --drift 0.8 --force
	$(DYNSEG) data validate --as-of $(DEMO_END)
	# End of August: train both models on the data known then, make them champions.
	$(DYNSEG) train purchase --as-of $(DEMO_CAMPAIGN)
	$(DYNSEG) train churn --as-of $(DEMO_CAMPAIGN)
	$(DYNSEG) models promote purchase latest
	$(DYNSEG) models promote churn latest
	$(DYNSEG) models list
	# Score, then send the segments a campaign (simulated: it converts 20 % of treated non-buyers).
	$(DYNSEG) score --as-of $(DEMO_CAMPAIGN)
	$(DYNSEG) data simulate-campaign --as-of $(DEMO_CAMPAIGN) --uplift 0.2
	# The features of the last nightly run, in a file to read (built after the campaign's orders,
	# which the run reads too: built before, the file missed them and matched no run's scores).
	$(DYNSEG) features build --as-of $(DEMO_END)
	# Late November: two nightly runs on consecutive days show who entered and exited.
	$(DYNSEG) score --as-of $(DEMO_PREV)
	$(DYNSEG) score --as-of $(DEMO_END)
	$(DYNSEG) segments show likely_buyers --sample 5
	$(DYNSEG) segments changes likely_buyers --limit 10
	# The campaign's outcome window has passed: holdout lift and realized quality.
	$(DYNSEG) lift --as-of $(DEMO_CAMPAIGN)
	# Drift of the latest run against the training reference (exit 3 = alarm, expected here).
	$(DYNSEG) monitor --as-of $(DEMO_END) || test $$? -eq 3
	@echo "Segment exports (sendable, holdout, suppressions): .dynseg/exports/$(DEMO_END)/"
	@echo "Drift reports: .dynseg/reports/monitor/$(DEMO_END)/   Lift: .dynseg/reports/lift/$(DEMO_CAMPAIGN)/"
	@echo "Review runs, plots and model cards in the MLflow UI:"
	@echo "  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.dynseg/mlflow.db --host 127.0.0.1"

# The Java Spark starts, as dynseg finds it: JAVA_HOME's when set, else the one on PATH.
java:
	@if [ -n "$$JAVA_HOME" ]; then j="$$JAVA_HOME/bin/java"; where="JAVA_HOME ($$JAVA_HOME)"; \
	  else j="$$(command -v java || true)"; where="PATH"; fi; \
	if [ -z "$$j" ] || [ ! -x "$$j" ]; then \
	  echo "Spark needs Java 17 or newer, and there is no java in $$where."; \
	  echo "Install it with: apt-get update && apt-get install -y openjdk-17-jre-headless (or fix JAVA_HOME)"; exit 1; fi; \
	v="$$("$$j" -version 2>&1 | grep -m1 'version "' || "$$j" -version 2>&1 | head -1)"; \
	echo "$$v" | grep -Eq 'version "(1[7-9]|[2-9][0-9])' || { \
	  echo "Spark needs Java 17 or newer; the java in $$where ($$j) is: $$v"; \
	  echo "Install it with: apt-get update && apt-get install -y openjdk-17-jre-headless, and put it first on PATH (or set JAVA_HOME)"; exit 1; }

# Two workers (pytest-xdist), each taking whole test files so a module's fixtures are built once.
TEST_WORKERS ?= 2
test: java demo env-dev
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean-demo:
	rm -rf .dynseg
