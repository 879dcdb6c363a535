#!/usr/bin/env bash
# TTS voices and sox with its codecs for the synthetic corpus and the recording channels, and alsa-utils' recorded Noise.wav (a non-speech
# sound of benchmarks/no_speech.py), and headless Chromium with its driver for the web app's
# browser tests (tests/test_serve_browser.py), and a C compiler with Python's headers for the
# query's compiled loops (weighter/_ranking.c) (Debian/Ubuntu). Safe to run twice.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v sox >/dev/null || need+=(sox)
dpkg -s libsox-fmt-all >/dev/null 2>&1 || need+=(libsox-fmt-all)  # sox's MP3, AMR-NB, GSM, Vorbis codecs
[ -f /usr/share/dict/words ] || need+=(wamerican)
[ -d /usr/share/sounds/alsa ] || need+=(alsa-utils)  # /usr/share/sounds/alsa/Noise.wav
command -v gcc >/dev/null || need+=(gcc)
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need+=(python3-dev)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
fi
echo "installing: ${need[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
