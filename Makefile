# Developer shortcuts. The README's two commands are the supported entry points.
PY ?= python3

.PHONY: build test bench clean
build:
	QUANTC_WERROR=1 $(PY) setup.py build_ext --inplace

test: build
	$(PY) -m pytest -q

bench: build
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf build quantc/_C*.so
