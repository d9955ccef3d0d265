#!/usr/bin/env bash
# Coverage-guided fuzzing of the readers and writers (fuzz/; needs `cargo install cargo-fuzz`
# and a nightly toolchain).
#
#   scripts/fuzz.sh TARGET SECONDS    one target, e.g. scripts/fuzz.sh pickle 600
#   scripts/fuzz.sh all SECONDS       every target in turn, SECONDS each
#   scripts/fuzz.sh list              the targets
#
# One process (libFuzzer's default; CPU is shared). New inputs go to fuzz/corpus/TARGET (not committed);
# fuzz/seeds/TARGET is the committed seed corpus. A crash leaves its input in
# fuzz/artifacts/TARGET; make it a named regression test before fixing it. Each run prints
# libFuzzer's final statistics (executions, coverage) to fuzz/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^weightmap-fuzz$')
if [ "${1:-}" = list ] || [ $# -lt 2 ]; then
  echo "usage: scripts/fuzz.sh TARGET|all SECONDS; targets:" >&2
  echo "$targets" >&2
  [ "${1:-}" = list ]
  exit $?
fi
if [ "$1" = all ]; then run=$targets; else run=$1; fi
mkdir -p logs
cargo +nightly fuzz build -O
for t in $run; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for $2 s" >&2
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$2" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    2>&1 | tee "logs/$t.log" | grep -E "^(#[0-9]+ +DONE|==|SUMMARY|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|Test unit written" || true
  if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
    echo "fuzz: $t found failures: $(ls artifacts/$t)" >&2
  fi
done
