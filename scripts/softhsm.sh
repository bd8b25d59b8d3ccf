#!/usr/bin/env bash
# Prepares a private SoftHSM2 token for the PKCS#11 audit signer's tests
# (tests/audit/test_pkcs11*.py) and prints its settings.
#
# - Installs Debian's softhsm2 package when its module or softhsm2-util is missing
#   (CI and a fresh machine start without it; we run as root there).
# - Keeps its own token store under ${XDG_CACHE_HOME:-~/.cache}/secure-ds/softhsm, with
#   its own softhsm2.conf (SOFTHSM2_CONF points at it), so it never touches a system
#   token directory. Test PINs only: user PIN and SO PIN below, not for real keys.
# - Generates, inside the token, the key pairs the tests use (labels audit-ed25519 and
#   audit-p256) with python-pkcs11 from the project's virtualenv, and writes their
#   public keys (PEM) beside the store.
# - Idempotent: a second run finds the token and keys and returns in well under a second
#   (delete the directory to start over).
#
# There is no daemon: SoftHSM2 is a library the signer loads. The tests find the store
# through tests/_services.py (require_softhsm), which sets SOFTHSM2_CONF.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
STATE="${XDG_CACHE_HOME:-$HOME/.cache}/secure-ds/softhsm"
CONF="$STATE/softhsm2.conf"
MODULE="${SECURE_DS_AUDIT_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
TOKEN="secure-ds-test"
PIN="secure-ds-test-pin"
SO_PIN="secure-ds-test-so-pin"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"

die() {
    echo "softhsm.sh: $*" >&2
    exit 1
}

if [ ! -f "$MODULE" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 \
        || die "SoftHSM2 is not installed and apt-get is not available; install softhsm2 yourself and rerun"
    [ "$(id -u)" = "0" ] \
        || die "SoftHSM2 is not installed; run this script as root (it uses apt-get) or run: sudo apt-get install softhsm2"
    echo "softhsm.sh: installing softhsm2 (Debian package)"
    log="${TMPDIR:-/tmp}/secure-ds-softhsm-apt.log"
    status=0
    {
        apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends softhsm2
    } >"$log" 2>&1 || status=$?
    if [ "$status" != 0 ]; then
        tail -n 20 "$log" >&2 || true
        die "apt-get install softhsm2 failed (exit $status; full log in $log); check the network and apt sources, then rerun"
    fi
    [ -f "$MODULE" ] || die "the PKCS#11 module $MODULE is still missing after installing softhsm2"
fi

[ -x "$PYTHON" ] || die "$PYTHON not found: run make install first (the keys are made with python-pkcs11)"
"$PYTHON" -c "import pkcs11" 2>/dev/null \
    || die "python-pkcs11 is not installed in $PYTHON's environment: pip install -e '.[dev]' (it is in the hsm extra)"

mkdir -p "$STATE/tokens"
chmod 700 "$STATE"
if [ ! -f "$CONF" ]; then
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
        "$STATE/tokens" >"$CONF"
fi
export SOFTHSM2_CONF="$CONF"

if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label:[[:space:]]*$TOKEN[[:space:]]*\$"; then
    echo "softhsm.sh: initialising the token $TOKEN in $STATE/tokens"
    softhsm2-util --init-token --free --label "$TOKEN" --pin "$PIN" --so-pin "$SO_PIN" >/dev/null \
        || die "softhsm2-util --init-token failed"
fi

# The key pairs (made inside the token; only their public halves come out), unless an
# earlier run made them (their public keys are written last).
if [ -f "$STATE/audit-ed25519.pub" ] && [ -f "$STATE/audit-p256.pub" ]; then
    echo "softhsm.sh: token $TOKEN ready (SOFTHSM2_CONF=$CONF)"
    echo "SOFTHSM2_CONF=$CONF SECURE_DS_AUDIT_PKCS11_MODULE=$MODULE SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL=$TOKEN SECURE_DS_AUDIT_PKCS11_PIN=$PIN"
    exit 0
fi
(cd "$repo" && "$PYTHON" - "$MODULE" "$TOKEN" "$PIN" "$STATE") <<'PY' || die "generating the test keys failed"
import sys
from pathlib import Path

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from secure_ds.audit._pkcs11 import Pkcs11Signer

module, token_label, pin, state = sys.argv[1:5]
token = pkcs11.lib(module).get_token(token_label=token_label)
curves = {
    "audit-ed25519": (KeyType.EC_EDWARDS, "1.3.101.112", Mechanism.EC_EDWARDS_KEY_PAIR_GEN),
    "audit-p256": (KeyType.EC, "secp256r1", Mechanism.EC_KEY_PAIR_GEN),
}
with token.open(rw=True, user_pin=pin) as session:
    for label, (key_type, curve, mechanism) in curves.items():
        found = list(session.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        if found:
            continue
        params = session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
        )
        params.generate_keypair(store=True, label=label, mechanism=mechanism)
        print(f"softhsm.sh: generated {label} in the token")
for label in curves:
    signer = Pkcs11Signer(module=module, token_label=token_label, key_label=label, pin=pin)
    pem = signer.public_key().pem()
    signer.close()
    Path(state, f"{label}.pub").write_bytes(pem)
PY

echo "softhsm.sh: token $TOKEN ready (SOFTHSM2_CONF=$CONF)"
echo "SOFTHSM2_CONF=$CONF SECURE_DS_AUDIT_PKCS11_MODULE=$MODULE SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL=$TOKEN SECURE_DS_AUDIT_PKCS11_PIN=$PIN"
