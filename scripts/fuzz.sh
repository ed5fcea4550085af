#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) and runs each one for a short, fixed
# time: the CI smoke run. FUZZING.md describes the targets, their invariants and the long runs.
#
#   scripts/fuzz.sh                    every target, FUZZ_SECONDS (default 20) each
#   scripts/fuzz.sh --long             every target, FUZZ_RUNS (default 10000000) executions each
#   scripts/fuzz.sh [--long] b64 ...   only the named targets
#
# Environment: FUZZ_SECONDS, FUZZ_RUNS, FUZZ_SANITIZER (default none: the code is safe Rust;
# `address` works too), FUZZ_JOBS is not used: one target at a time, one process each.
#
# The machine has a stable toolchain only; cargo-fuzz needs nightly flags, which
# RUSTC_BOOTSTRAP=1 allows on stable. A crash stops the script with the input saved under
# fuzz/artifacts/<target>/; reproduce it with `cargo fuzz run <target> <file>` in fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=short
targets=()
for arg in "$@"; do
    case "$arg" in
        --long) mode=long ;;
        -h | --help)
            sed -n '2,15p' "$0"
            exit 0
            ;;
        *) targets+=("$arg") ;;
    esac
done

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
seconds="${FUZZ_SECONDS:-20}"
runs="${FUZZ_RUNS:-10000000}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

# Seeds: regenerated from ../shared/vectors when they are there (the committed ones otherwise).
vectors=../shared/vectors
if [[ -d "$vectors" ]]; then
    python3 fuzz/make_seeds.py "$vectors"
fi

cd fuzz
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi

# Debug assertions on: integer overflow and slice-arithmetic bugs panic instead of wrapping.
# The short (CI) run builds without optimisation: minutes less to build, and 10 s of a slower
# target still replays every seed and regression; the long runs build optimised.
if [[ $mode == long ]]; then
    build_flags=(--release --debug-assertions --sanitizer "$sanitizer")
else
    build_flags=(--dev --sanitizer "$sanitizer")
fi
echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build "${build_flags[@]}"
echo "== built in $((SECONDS - start)) s"

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    if [[ $mode == long ]]; then
        limit=(-runs="$runs")
    else
        limit=(-max_total_time="$seconds")
    fi
    echo "== $target (${limit[*]})"
    log="artifacts/$target/last-run.log"
    # corpus/<target> collects what the run finds; seeds/<target> and the inputs of crashes that
    # were fixed (regressions/<target>, run first on every start) are read only.
    inputs=("corpus/$target" "seeds/$target")
    if [[ -d "regressions/$target" ]]; then
        inputs+=("regressions/$target")
    fi
    if ! cargo fuzz run "${build_flags[@]}" "$target" "${inputs[@]}" -- \
        "${limit[@]}" -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAILED: fuzz target $target crashed; input saved in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" | tr '\n' ' '
    echo "corpus: $(find "corpus/$target" -type f | wc -l) files"
done
echo "== fuzzing: ${#targets[@]} targets, no crash"
