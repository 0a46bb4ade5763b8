# mmlongtail: the README's two commands are `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
DEMO_DATA ?= data/synthetic_lvis
DEMO_CONFIG ?= configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py
DEMO_WORK_DIR ?= work_dirs/demo
PYTEST_ARGS ?=

export PYTHONUNBUFFERED := 1

.PHONY: install test demo demo-data clean-demo

install:
	@bash tools/install.sh

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo-data: install
	@if [ -f $(DEMO_DATA)/annotations/lvis_v1_val.json ]; then \
		echo "[demo] using $(DEMO_DATA)"; \
	else \
		$(PY) tools/make_synthetic_lvis.py $(DEMO_DATA); \
	fi

demo: demo-data
	$(PY) tools/demo.py --config $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR) \
		--data-root $(DEMO_DATA)

clean-demo:
	rm -rf $(DEMO_WORK_DIR)
