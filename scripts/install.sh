#!/usr/bin/env bash
# Install nutups as a systemd service: a venv in /opt/nutups, the example configuration in
# /etc/nutups (kept if there is one), the unit, and on a Raspberry Pi I2C and the boot lines
# the X120X HAT needs. Run from a checkout:
#
#   sudo scripts/install.sh               install, then start the service
#   sudo scripts/install.sh --uninstall   remove what it installed (a changed configuration stays)
#   DESTDIR=DIR scripts/install.sh        lay everything out under DIR and touch nothing else:
#                                         no user, no systemctl, no modprobe; DIR is also the
#                                         machine looked at (DIR/proc/device-tree/model,
#                                         DIR/boot/firmware/config.txt), so a Pi can be staged
#   --no-venv                             do not build /opt/nutups (nutups on PATH runs the check)
set -euo pipefail
cd "$(dirname "$0")/.."

DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
PREFIX=/opt/nutups
CONF=/etc/nutups
UNIT=/etc/systemd/system/nutups.service
MODULES=/etc/modules-load.d/nutups.conf
MANIFEST=$CONF/.install-manifest
BEGIN_MARK="# nutups (scripts/install.sh): I2C for the fuel gauge, pull-up on the PLD line (GPIO6)"
END_MARK="# end of nutups"

uninstall=0
venv=1
for arg in "$@"; do
  case "$arg" in
    --uninstall) uninstall=1 ;;
    --no-venv) venv=0 ;;
    *) echo "usage: [DESTDIR=DIR] $0 [--uninstall] [--no-venv]" >&2; exit 2 ;;
  esac
done
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  echo "run as root (sudo $0), or stage it with DESTDIR=DIR $0" >&2
  exit 1
fi
real() { [ -z "$DESTDIR" ]; }  # installing on this machine, not staging under DESTDIR

# The Raspberry Pi's boot configuration, if this is one.
pi_model() { tr -d '\0' 2>/dev/null < "$DESTDIR/proc/device-tree/model" || true; }
boot_config() {
  local c
  for c in /boot/firmware/config.txt /boot/config.txt; do
    [ -f "$DESTDIR$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

if [ "$uninstall" = 1 ]; then
  if [ ! -f "$DESTDIR$MANIFEST" ]; then
    echo "nothing to uninstall: no $DESTDIR$MANIFEST" >&2
    exit 1
  fi
  if real; then
    systemctl disable --now nutups 2>/dev/null || true
  fi
  while read -r kind sum path; do
    case "$kind" in
      file)
        if [ ! -e "$DESTDIR$path" ]; then continue; fi
        if [ "$sum" != "-" ] && [ "$(sha256sum < "$DESTDIR$path" | cut -d' ' -f1)" != "$sum" ]; then
          echo "kept $path: changed since it was installed"
        else
          rm -f "$DESTDIR$path"
        fi ;;
      tree) rm -rf -- "$DESTDIR$path" ;;
      bootlines)
        sed -i "\|^$BEGIN_MARK\$|,\|^$END_MARK\$|d" "$DESTDIR$path"
        echo "removed nutups' lines from $path (reboot to apply)" ;;
    esac
  done < "$DESTDIR$MANIFEST"
  rm -f "$DESTDIR$MANIFEST"
  rmdir "$DESTDIR$CONF" 2>/dev/null || echo "kept $CONF: it holds files you changed or added"
  for d in /etc/modules-load.d /etc/systemd/system /etc/systemd /etc /opt /boot/firmware /boot; do
    if [ -n "$DESTDIR" ]; then rmdir "$DESTDIR$d" 2>/dev/null || true; fi  # only the staged, empty ones
  done
  if real; then
    systemctl daemon-reload
  fi
  echo "nutups uninstalled (its data in /var/lib/nutups stays; remove it by hand if you want)"
  exit 0
fi

manifest=()
record() { manifest+=("$1 ${2:--} $3"); }
put() {  # put MODE SOURCE DEST: install a file, owned root:nutups on a real install
  local mode=$1 src=$2 dest=$3
  install -D -m "$mode" "$src" "$DESTDIR$dest"
  if real; then chown root:nutups "$DESTDIR$dest"; fi
  record file "$(sha256sum < "$DESTDIR$dest" | cut -d' ' -f1)" "$dest"
}

if real; then
  getent group i2c >/dev/null || groupadd --system i2c
  getent group gpio >/dev/null || groupadd --system gpio
  id nutups >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin -G i2c,gpio nutups
fi

nutups=nutups
if [ "$venv" = 1 ]; then
  python3 -m venv "$DESTDIR$PREFIX"
  "$DESTDIR$PREFIX/bin/pip" install --quiet --upgrade pip
  "$DESTDIR$PREFIX/bin/pip" install --quiet ".[hardware]"
  record tree - "$PREFIX"
  nutups="$DESTDIR$PREFIX/bin/nutups"
fi

# The configuration: the examples, unless there is one already. upsd.users and nutups.yaml
# hold passwords (NUT users; Kasa, Shelly and MQTT): readable by root and the service only.
if [ ! -e "$DESTDIR$CONF/ups.conf" ]; then
  install -d -m 0750 "$DESTDIR$CONF"
  if real; then chgrp nutups "$DESTDIR$CONF"; fi
  put 0644 nut-config/ups.conf "$CONF/ups.conf"
  put 0644 nut-config/upsd.conf "$CONF/upsd.conf"
  put 0640 nut-config/upsd.users "$CONF/upsd.users"
  put 0640 nut-config/nutups.yaml "$CONF/nutups.yaml"
  echo "Edit $CONF/upsd.users: set real passwords."
else
  echo "kept the configuration in $CONF"
fi

put 0644 scripts/nutups.service "$UNIT"

model=$(pi_model)
if [[ "$model" == *"Raspberry Pi"* ]]; then
  echo "Raspberry Pi found ($model): enabling I2C and the HAT's boot lines"
  install -d "$DESTDIR$(dirname "$MODULES")"
  echo "i2c-dev" > "$DESTDIR$MODULES"
  record file "$(sha256sum < "$DESTDIR$MODULES" | cut -d' ' -f1)" "$MODULES"
  if config=$(boot_config); then
    missing=()
    lines=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$DESTDIR$config")
    grep -qxE 'dtparam=i2c(_arm)?=on' <<< "$lines" || missing+=("dtparam=i2c_arm=on")
    grep -qxE 'gpio=6=ip,pu|gpio=6=pu,ip' <<< "$lines" || missing+=("gpio=6=ip,pu")
    if [ "${#missing[@]}" -gt 0 ]; then
      { echo "$BEGIN_MARK"; printf '%s\n' "${missing[@]}"; echo "$END_MARK"; } >> "$DESTDIR$config"
      record bootlines - "$config"
      echo "added to $config: ${missing[*]} (reboot to apply)"
    fi
  else
    echo "warning: no /boot/firmware/config.txt: add dtparam=i2c_arm=on and gpio=6=ip,pu by hand" >&2
  fi
  if real; then modprobe i2c-dev 2>/dev/null || true; fi
fi

printf '%s\n' "${manifest[@]}" > "$DESTDIR$MANIFEST"
chmod 0600 "$DESTDIR$MANIFEST"

# A configuration nutups would refuse stops the installation here, with its errors.
if ! check=$("$nutups" config check --confpath "$DESTDIR$CONF" 2>&1); then
  echo "$check" >&2
  echo "nutups config check failed: fix $CONF, then run $0 again" >&2
  exit 1
fi
echo "$check"

if real; then
  systemctl daemon-reload
  "$nutups" doctor || echo "nutups doctor found problems: fix them, then: systemctl restart nutups"
  systemctl enable --now nutups
  echo "nutups is running: upsc ups@localhost"
else
  echo "staged under $DESTDIR"
fi
