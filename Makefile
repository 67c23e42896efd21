PYTHON ?= python3

.PHONY: test lint bench demo demo-tls

test:
	$(PYTHON) tests/run.py $(TESTS)

lint:
	$(PYTHON) -m flake8 cti-proxy tests

bench:
	$(PYTHON) tests/bench.py

demo:
	$(PYTHON) cti-proxy/ctisim demo

demo-tls:
	$(PYTHON) cti-proxy/ctisim demo --starttls
