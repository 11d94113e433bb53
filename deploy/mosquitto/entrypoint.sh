#!/bin/sh
# Container entry point for the broker: build the password file from the environment, then
# exec the broker command given as arguments.
#
# mosquitto's password files hold salted hashes only (mosquitto_passwd), never plain text, so
# they are built here at each start from the secrets compose passes in. Two files, one per
# listener (mosquitto.conf): "passwd" for the lockers' listener (1883), "passwd-cloud" for the
# cloud's (1884), so no locker account can log in where client ids are not bound to accounts.
#   MQTT_CLOUD_PASSWORD    account "cloud" (the API processes), passwd-cloud only
#   MQTT_HEALTH_PASSWORD   account "health" (the broker's health check)
#   XINBAO_LOCKER_ID, MQTT_LOCKER_PASSWORD   the simulated cabinet's own account
# A fleet's locker accounts are hashed offline with mosquitto_passwd and mounted read-only at
# $MQTT_FLEET_PASSWD (docs/deploy.md); its lines are copied first, so the accounts above win.
#
# The ACL is copied next to it because mosquitto wants both files owned by its own user and
# not readable by others, which a read-only bind mount from the host cannot guarantee.
set -eu

run_dir=${MQTT_RUN_DIR:-/mosquitto/run}
data_dir=${MQTT_DATA_DIR:-/mosquitto/data}
acl_source=${MQTT_ACL_SOURCE:-/mosquitto/config/acl}
fleet_passwd=${MQTT_FLEET_PASSWD:-/mosquitto/secrets/passwd}

fail() {
    echo "entrypoint: $*" >&2
    exit 2
}

[ -n "${MQTT_CLOUD_PASSWORD:-}" ] || fail "MQTT_CLOUD_PASSWORD is not set"
[ -n "${MQTT_HEALTH_PASSWORD:-}" ] || fail "MQTT_HEALTH_PASSWORD is not set"
[ -n "${XINBAO_LOCKER_ID:-}" ] || fail "XINBAO_LOCKER_ID is not set"
[ -n "${MQTT_LOCKER_PASSWORD:-}" ] || fail "MQTT_LOCKER_PASSWORD is not set"
# The password file is "user:hash" per line; the ACL reserves the two service accounts.
case "$XINBAO_LOCKER_ID" in
    *:* | *" "* | */* | *+* | *#* | cloud | cloud-* | health)
        fail "XINBAO_LOCKER_ID '$XINBAO_LOCKER_ID' cannot be a broker account name" ;;
esac
[ $# -gt 0 ] || fail "no broker command given"
[ -r "$acl_source" ] || fail "cannot read the ACL at $acl_source"

umask 077
mkdir -p "$run_dir"
passwd_tmp="$run_dir/passwd.new"
cloud_tmp="$run_dir/passwd-cloud.new"
if [ -f "$fleet_passwd" ]; then
    # A fleet file must hold locker accounts only: "cloud" there would log in on the lockers'
    # listener, and the service accounts are added below anyway.
    grep -v -e '^cloud:' -e '^cloud-' -e '^health:' "$fleet_passwd" >"$passwd_tmp" || true
else
    : >"$passwd_tmp"
fi
: >"$cloud_tmp"
# -b puts the password on mosquitto_passwd's command line: visible only inside this container
# for the instant the command runs, which the mosquitto documentation accepts for batch use.
mosquitto_passwd -b "$cloud_tmp" cloud "$MQTT_CLOUD_PASSWORD"
mosquitto_passwd -b "$passwd_tmp" health "$MQTT_HEALTH_PASSWORD"
mosquitto_passwd -b "$passwd_tmp" "$XINBAO_LOCKER_ID" "$MQTT_LOCKER_PASSWORD"
cp "$acl_source" "$run_dir/acl.new"

# Started as root, mosquitto drops to the "mosquitto" user before it reads these files.
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown mosquitto:mosquitto "$run_dir" "$passwd_tmp" "$cloud_tmp" "$run_dir/acl.new"
    if [ -d "$data_dir" ]; then
        chown mosquitto:mosquitto "$data_dir"
    fi
fi
# Renamed into place last, so a failed start never leaves a half-written password file.
mv "$passwd_tmp" "$run_dir/passwd"
mv "$cloud_tmp" "$run_dir/passwd-cloud"
mv "$run_dir/acl.new" "$run_dir/acl"

exec "$@"
