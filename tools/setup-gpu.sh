#!/usr/bin/env bash
# Makes sure wgpu can find a Vulkan driver. On a machine without a GPU driver this installs Mesa's
# software Vulkan driver (lavapipe) when it can, and otherwise says exactly what to install.
# Quiet and quick when a driver is already there; exits non-zero only when nothing usable is found.
set -u

case "$(uname -s)" in
  Darwin|MINGW*|MSYS*|CYGWIN*) exit 0 ;;   # Metal / DX12: nothing to install
esac

have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; }
have_driver() {
  [ -n "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && return 0
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    ls "$d"/*.json >/dev/null 2>&1 && return 0
  done
  return 1
}

if have_loader && have_driver; then
  exit 0
fi

echo "setup-gpu: no Vulkan loader or driver found; installing Mesa's software driver (lavapipe)..." >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    as_root=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
  else
    as_root="unavailable"
  fi
  if [ "$as_root" != unavailable ]; then
    export DEBIAN_FRONTEND=noninteractive
    $as_root apt-get update -qq >&2 && $as_root apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >&2
  fi
fi

if have_loader && have_driver; then
  echo "setup-gpu: lavapipe installed; wgpu will use it where no GPU driver is present" >&2
  exit 0
fi
cat >&2 <<'MSG'
setup-gpu: no Vulkan driver is available and none could be installed automatically.
  On Debian or Ubuntu run:  sudo apt-get install mesa-vulkan-drivers libvulkan1
  Elsewhere, install your GPU's Vulkan driver (or Mesa's lavapipe), then run this command again.
MSG
exit 1
