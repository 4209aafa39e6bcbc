#!/usr/bin/env bash
# Debian packages llmos needs. Installs the missing ones when run as root; otherwise names them.
set -euo pipefail
packages=(
  # Qt's xcb platform plugin, for a real window on an X display
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1
  # a virtual display, for screenshots and for `make run` on a machine with no display
  xvfb
  # voice: pyttsx3 speaks through espeak-ng; sounddevice needs PortAudio
  espeak-ng libportaudio2
  # the python device's sandbox
  bubblewrap
)
stamp=".venv/.llmos-system-deps"
want="${packages[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "system: installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "system: missing Debian packages: ${missing[*]}" >&2
    echo "system: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
mkdir -p .venv && echo "$want" > "$stamp"
