# UnStar Studio: common tasks. `make help` lists them.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
APP := dist/UnStar Studio.app
DATA_HOME ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)
# The launcher needs a command that works outside a shell with the venv active: the venv's script if there is one.
LAUNCH_CMD ?= $(or $(abspath $(wildcard .venv/bin/unstar-studio)),$(shell command -v unstar-studio 2>/dev/null),unstar-studio)

.PHONY: help app app-no-selftest check-app icons install-desktop uninstall-desktop test run self-test clean-app

help:
	@echo "make run               set up .venv if needed and start UnStar Studio"
	@echo "make self-test         load the embedded model, answer one question, exit (no window)"
	@echo "make test              set up .venv if needed and run the tests (PYTEST_ARGS='-m \"not slow\"' to narrow)"
	@echo "make app               macOS (Apple silicon): build '$(APP)' with py2app, then check it and run its self-test"
	@echo "make check-app         check an already built '$(APP)'"
	@echo "make icons             redraw resources/icon.png, resources/icons/*.png and resources/UnStarStudio.icns"
	@echo "make install-desktop   Linux: add UnStar Studio to the application menu (~/.local/share)"

app:
	$(PYTHON) scripts/build_app.py

app-no-selftest:
	$(PYTHON) scripts/build_app.py --no-self-test

check-app:
	$(PYTHON) scripts/check_bundle.py "$(APP)"

icons:
	$(PYTHON) scripts/make_icons.py

install-desktop:
	install -d "$(DATA_HOME)/applications"
	sed 's|^Exec=unstar-studio$$|Exec="$(LAUNCH_CMD)"|' resources/unstar-studio.desktop > "$(DATA_HOME)/applications/unstar-studio.desktop"
	chmod 644 "$(DATA_HOME)/applications/unstar-studio.desktop"
	for png in resources/icons/unstar-studio-*.png; do \
	  size=$${png##*-}; size=$${size%.png}; \
	  install -D -m 644 "$$png" "$(DATA_HOME)/icons/hicolor/$${size}x$${size}/apps/unstar-studio.png"; \
	done
	install -D -m 644 resources/icon.png "$(DATA_HOME)/icons/hicolor/1024x1024/apps/unstar-studio.png"
	@echo "Installed: $(DATA_HOME)/applications/unstar-studio.desktop (runs $(LAUNCH_CMD))"

uninstall-desktop:
	rm -f "$(DATA_HOME)/applications/unstar-studio.desktop"
	rm -f "$(DATA_HOME)"/icons/hicolor/*/apps/unstar-studio.png

test:
	bash scripts/bootstrap.sh test $(PYTEST_ARGS)

run:
	bash scripts/bootstrap.sh run

self-test:
	$(PYTHON) scripts/app_main.py --self-test

clean-app:
	rm -rf build/bdist.* "$(APP)"
