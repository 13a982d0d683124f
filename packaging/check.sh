#!/usr/bin/env bash
# Builds the .deb with cargo-deb and checks what it ships: its files and conffile, the maintainer
# scripts (the service is neither enabled nor started; a purge deletes the data), the systemd unit (`systemd-analyze verify` silent,
# `systemd-analyze security` exposure at most 2.0), and the packaged binary with the packaged config
# (check-config, then a start, /healthz and a clean SIGTERM).
#
# `systemd-analyze verify` also checks that ExecStart's /usr/bin/natter exists. In CI (CI set and
# root; or NATTER_CHECK_INSTALL=1) the package is installed for real with dpkg, the installed unit is
# verified, and the package is purged again: the CI machine is thrown away, and this also runs the
# maintainer scripts. Elsewhere nothing is installed: the unit is verified from the extracted package
# and the one complaint about the missing /usr/bin/natter is expected.
#
# Needs cargo-deb (`cargo install cargo-deb --locked`), dpkg-deb and systemd-analyze.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
max_exposure=2.0

fail() {
  echo "packaging/check.sh: $*" >&2
  exit 1
}
for tool in cargo-deb dpkg-deb systemd-analyze; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
in_ci=false
case "${CI:-}" in "" | false | 0) ;; *) in_ci=true ;; esac
install=${NATTER_CHECK_INSTALL:-}
if [ -z "$install" ]; then
  if [ "$in_ci" = true ] && [ "$(id -u)" = 0 ]; then install=1; else install=0; fi
fi

tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== build the package (cargo deb)"
# cargo deb prints the path of the package it wrote as its last line.
deb=$(cargo deb | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not name a package: $deb"
echo "$deb"

echo "== contents"
dpkg-deb -c "$deb"
dpkg-deb -x "$deb" "$tmp/root"
dpkg-deb -e "$deb" "$tmp/control"
unit_path=$(cd "$tmp/root" && find . -path '*/systemd/system/natter.service' | sed 's|^\./||')
[ -n "$unit_path" ] || fail "the package has no natter.service"
for file in usr/bin/natter etc/natter/config.toml "$unit_path" usr/share/doc/natter/README.md \
  usr/share/doc/natter/copyright; do
  [ -f "$tmp/root/$file" ] || fail "the package lacks /$file"
done
# The documentation pages the README links, each beside it as in the repository.
for page in docs/*.md; do
  cmp -s "$page" "$tmp/root/usr/share/doc/natter/$page" || fail "the package lacks /usr/share/doc/natter/$page"
done
grep -qx /etc/natter/config.toml "$tmp/control/conffiles" || fail "/etc/natter/config.toml is not a conffile"
# A never-configured natter must not start at the next boot: the operator enables it. With
# cargo-deb's enable = false, postinst enables only a unit that was installed and enabled before.
grep -q 'if deb-systemd-helper debian-installed natter.service; then' "$tmp/control/postinst" ||
  fail "postinst enables natter.service at install; the operator enables it after configuring"
if grep -Eq 'deb-systemd-invoke (start|restart) ' "$tmp/control/postinst"; then
  fail "postinst starts natter.service; the operator starts it after configuring"
fi
grep -q 'rm -rf /var/lib/private/natter /var/lib/natter' "$tmp/control/postrm" ||
  fail "postrm does not delete the data on purge"
grep -q 'deb-systemd-helper purge natter.service' "$tmp/control/postrm" ||
  fail "cargo-deb's systemd part is missing from postrm (#DEBHELPER#)"
cmp -s packaging/natter.service "$tmp/root/$unit_path" || fail "the packaged unit differs from packaging/natter.service"

echo "== systemd-analyze security"
report=$(systemd-analyze security --offline=yes --no-pager "$tmp/root/$unit_path")
line=$(grep 'Overall exposure level' <<<"$report") || fail "no exposure line in: $report"
exposure=$(sed -E 's/.*: *([0-9]+(\.[0-9]+)?).*/\1/' <<<"$line")
echo "$line"
awk -v e="$exposure" -v max="$max_exposure" 'BEGIN { exit !(e + 0 <= max + 0) }' ||
  fail "exposure $exposure is above $max_exposure:
$report"

echo "== systemd-analyze verify"
if [ "$install" = 1 ]; then
  [ "$(id -u)" = 0 ] || fail "installing the package to verify it needs root"
  export DEBIAN_FRONTEND=noninteractive
  dpkg -i "$deb"
  installed_unit=$(dpkg -L natter | grep '/systemd/system/natter.service$')
  out=$(systemd-analyze verify "$installed_unit" 2>&1) || fail "systemd-analyze verify failed: $out"
  [ -z "$out" ] || fail "systemd-analyze verify complained: $out"
  [ ! -e /etc/systemd/system/multi-user.target.wants/natter.service ] || fail "installing enabled natter.service"
  # The operator enables it; purging disables it again and deletes the data.
  systemctl enable natter.service
  [ -L /etc/systemd/system/multi-user.target.wants/natter.service ] || fail "natter.service cannot be enabled"
  mkdir -p /var/lib/private/natter && echo data >/var/lib/private/natter/db
  env -i /usr/bin/natter --config /etc/natter/config.toml check-config >/dev/null ||
    fail "the installed natter rejects the installed config"
  # An upgrade (here: the same package again) keeps the operator's edits to the conffile.
  echo 'public_url = "https://chat.example.org"' >>/etc/natter/config.toml
  dpkg -i "$deb" </dev/null
  grep -q '^public_url = "https://chat.example.org"$' /etc/natter/config.toml ||
    fail "reinstalling the package replaced the edited /etc/natter/config.toml"
  dpkg --purge natter
  [ ! -e /etc/natter/config.toml ] && [ ! -e /usr/bin/natter ] || fail "purging left files behind"
  [ ! -e /etc/systemd/system/multi-user.target.wants/natter.service ] || fail "purging left the service enabled"
  [ ! -e /var/lib/private/natter ] || fail "purging left the data in /var/lib/private/natter"
  echo "installed (not enabled), verified ($installed_unit: silent), enabled, reinstalled keeping the config," \
    "purged with its data"
else
  out=$(systemd-analyze verify "$tmp/root/$unit_path" 2>&1) || true
  rest=$(grep -v 'Command /usr/bin/natter is not executable' <<<"$out" || true)
  [ -z "$rest" ] || fail "systemd-analyze verify complained: $out"
  echo "silent apart from the missing /usr/bin/natter (the package is not installed here;" \
    "CI installs it and verifies it completely)"
fi

echo "== the packaged binary with the packaged config"
natter=("$tmp/root/usr/bin/natter" --config "$tmp/root/etc/natter/config.toml")
# Only the variables given here: a developer's NATTER_* must not change the result.
env -i NATTER_DATA_DIR="$tmp/data" "${natter[@]}" check-config >"$tmp/check-config.out" ||
  fail "check-config failed: $(cat "$tmp/check-config.out")"
grep -qx "data_dir = \"$tmp/data\"" "$tmp/check-config.out" || fail "NATTER_DATA_DIR was not applied"
echo "check-config: ok"
: >"$tmp/serve.log" # exists before the background job opens it
env -i NATTER_DATA_DIR="$tmp/data" NATTER_LISTEN=127.0.0.1:0 "${natter[@]}" serve 2>>"$tmp/serve.log" &
server_pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/.* listening on \([^ ]*\) .*/\1/p' "$tmp/serve.log")
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "natter exited: $(cat "$tmp/serve.log")"
  sleep 0.1
done
[ -n "$addr" ] || fail "natter did not start: $(cat "$tmp/serve.log")"
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
printf 'GET /healthz HTTP/1.1\r\nHost: natter\r\nConnection: close\r\n\r\n' >&3
status_line=$(head -n 1 <&3)
exec 3<&-
[[ "$status_line" == "HTTP/1.1 200"* ]] || fail "/healthz answered: $status_line"
kill -TERM "$server_pid"
code=0
wait "$server_pid" || code=$?
server_pid=
[ "$code" = 0 ] || fail "natter exited with $code after SIGTERM: $(cat "$tmp/serve.log")"
grep -q ' stopped$' "$tmp/serve.log" || fail "no 'stopped' line: $(cat "$tmp/serve.log")"
grep 'listening on' "$tmp/serve.log"
echo "serve: /healthz 200, SIGTERM: exit 0"

echo "== packaging checks passed in $((SECONDS - started)) s"
