PYTHON ?= python3
# Test worker processes: most tests wait on sockets and processes, so a few per core pay.
JOBS ?= 4

.PHONY: test lint bench demo demo-tls

test:
	$(PYTHON) tests/run.py --jobs $(JOBS) $(TESTS)

lint:
	@$(PYTHON) -c 'import flake8' 2>/dev/null || { \
	    echo "make lint: flake8 is not installed for $(PYTHON): $(PYTHON) -m pip install -r requirements-dev.txt" >&2; \
	    exit 1; }
	$(PYTHON) -m flake8 cti-proxy tests

bench:
	$(PYTHON) tests/bench.py

demo:
	$(PYTHON) cti-proxy/ctisim demo $(ARGS)

demo-tls:
	$(PYTHON) cti-proxy/ctisim demo --starttls $(ARGS)
