#!/usr/bin/env bash
# Runs each cargo-fuzz target briefly (FUZZ_SECS, default 30 s) from the committed corpus.
# New inputs go to a scratch directory, so the committed corpus only grows on purpose:
#   cp fuzz/corpus-new/<target>/* fuzz/corpus/<target>/   (then commit)
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
#
# No nightly toolchain can be installed here: RUSTC_BOOTSTRAP=1 lets the stable compiler take
# the sanitizer flags cargo-fuzz passes. cargo-fuzz itself is installed into target/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-30}
tools="$(pwd)/target/tools"
if ! "$tools/bin/cargo-fuzz" --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz into target/tools"
  cargo install cargo-fuzz --locked --root "$tools" --quiet
fi
export PATH="$tools/bin:$PATH"
for target in frame_decode log_recovery journal_scan http_head chunked_body; do
  echo "==> fuzzing $target for ${secs}s"
  mkdir -p "fuzz/corpus-new/$target"
  log="fuzz/corpus-new/$target.log"
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus-new/$target" "fuzz/corpus/$target" \
      -- -max_total_time="$secs" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "error: fuzzing $target failed (build error or a failing input in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^(Done|INFO: seed corpus)" "$log" || true
  if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    echo "error: $target found a failing input: fuzz/artifacts/$target" >&2
    exit 1
  fi
done
