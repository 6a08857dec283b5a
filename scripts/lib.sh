# Shell helpers shared by the test scripts (sourced, not run).

# npm_pinned DIR PACKAGE WHAT: installs the npm packages pinned in DIR/package-lock.json
# unless DIR/node_modules/PACKAGE is there already, and fails if npm changed the lock.
npm_pinned() {
  local dir=$1 package=$2 what=$3
  [ -d "$dir/node_modules/$package" ] && return 0
  echo "==> installing $what"
  cp "$dir/package-lock.json" "$dir/.package-lock.before"
  # `npm ci` refuses the conformance lock on Linux (a Windows-only optional dependency of
  # vite is missing from it); `npm install --no-save` installs the same versions from the
  # same lock.
  (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error)
  if ! cmp -s "$dir/package-lock.json" "$dir/.package-lock.before"; then
    echo "error: npm changed $dir/package-lock.json" >&2
    mv "$dir/.package-lock.before" "$dir/package-lock.json"
    exit 1
  fi
  rm -f "$dir/.package-lock.before"
}

# test_certificate DIR NAME: makes DIR/ca.pem (a test CA) and DIR/cert.pem, DIR/key.pem (a
# certificate for 127.0.0.1 it signed), with openssl.
test_certificate() {
  (cd "$1" && {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
      -out ca.pem -days 2 -subj "/CN=ds-server $2 CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem \
      -out cert.csr -subj "/CN=127.0.0.1"
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 \
      -extfile ext.cnf
  } 2>/dev/null)
}
