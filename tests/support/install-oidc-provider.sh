#!/usr/bin/env bash
# Install the OpenID Connect provider the OIDC login tests start: LemonLDAP::NG's portal from
# Debian's packages, served by Starman (a PSGI server) on a 127.0.0.1 port, with an SQLite
# user database the tests write. Idempotent; safe to run again. Called by bin/setup.
#
# The portal package depends on lemonldap-ng-fastcgi-server, whose package ships a system
# service. The tests never use it: when this script installs it on a host run by systemd,
# the service is stopped and disabled at once, so nothing outlives a test run.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-oidc-provider.sh: run as root (apt-get install)" >&2
  exit 2
fi

# liblemonldap-ng-portal-perl: the portal (OIDC issuer). starman: serves its PSGI app.
# libdbd-sqlite3-perl: the user database of the tests (LemonLDAP::NG's DBI backend).
# The rest are modules the portal loads at start-up that its packages only recommend:
# String::Random and IO::String (OIDC issuer), GD::SecurityImage with Image::Magick (the
# captcha module, loaded whether captchas are enabled or not).
packages=(liblemonldap-ng-portal-perl starman libdbd-sqlite3-perl
          libstring-random-perl libio-string-perl libgd-securityimage-perl libimage-magick-perl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

service_was_installed=no
dpkg-query -W -f='${Status}' lemonldap-ng-fastcgi-server 2>/dev/null | grep -q "install ok installed" \
  && service_was_installed=yes

echo "[setup] apt-get install ${missing[*]} (OIDC provider for the tests)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

if [ "$service_was_installed" = no ] && [ -d /run/systemd/system ]; then
  systemctl disable --now lemonldap-ng-fastcgi-server.service >/dev/null 2>&1 || true
fi
