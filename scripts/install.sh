#!/usr/bin/env bash
# Install nutups on a Raspberry Pi OS (bookworm or later) machine with an X120X HAT:
# a venv in /opt/nutups, the example configuration in /etc/nutups, a systemd service.
# Run from a checkout: sudo scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

PREFIX=/opt/nutups
CONF=/etc/nutups

getent group i2c >/dev/null || groupadd --system i2c
getent group gpio >/dev/null || groupadd --system gpio
id nutups >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin -G i2c,gpio nutups

python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
"$PREFIX/bin/pip" install --quiet ".[hardware]"

if [ ! -d "$CONF" ]; then
  install -d -m 0750 -o root -g nutups "$CONF"
  install -m 0644 -o root -g nutups nut-config/ups.conf nut-config/upsd.conf nut-config/nutups.yaml "$CONF/"
  install -m 0640 -o root -g nutups nut-config/upsd.users "$CONF/"
  echo "Edit $CONF/upsd.users: set real passwords."
fi

install -m 0644 scripts/nutups.service /etc/systemd/system/nutups.service
systemctl daemon-reload
"$PREFIX/bin/nutups" doctor || echo "nutups doctor found problems: fix them, then: systemctl restart nutups"
"$PREFIX/bin/nutups" config check --confpath "$CONF"
systemctl enable --now nutups
echo "nutups is running: upsc ups@localhost"
