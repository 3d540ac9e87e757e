# Shared by the offline selection recipes (sams.sh, active.sh, difficulty.sh); sourced, not run.
# The caller sets SCRIPT_NAME, DRY_RUN (0/1) and FRESH (0/1), reads its recipe with recipe_vars, adds its commands
# with stage and calls run_stages:
#   --dry-run  every command is checked by its own module's parser and checks (alignment.pipeline.dryrun, which prints it;
#              the launcher words before -m are kept); nothing is loaded, run or written, no GPU or network needed.
#   otherwise  the same check of every command first (a bad flag stops the recipe before its first GPU hour), then
#              the commands in order; a stage whose run folder holds a finished run.json is skipped (rerun the
#              recipe to resume), unless --fresh.
# Env: PYTHON (default: python on PATH).

PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
STAGE_LABELS=()
STAGE_DIRS=()
STAGE_CMDS=()

die() { echo "$SCRIPT_NAME: error: $*" >&2; exit 2; }
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
check_uint() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1: must be an integer >= 0, got '$2'"; }
check_pos() { [[ "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "$1: must be an integer >= 1, got '$2'"; }
check_choice() {  # FLAG VALUE CHOICE...
    local flag=$1 value=$2 c known=""
    shift 2
    for c in "$@"; do
        [[ "$value" == "$c" ]] && return 0
        known+="${known:+, }$c"
    done
    die "$flag: unknown value '$value'; known: $known"
}
# a folder name for a Hub dataset name or file and a split: characters other than [A-Za-z0-9._-] become _
slug() { printf '%s' "$*" | tr -c 'A-Za-z0-9._-' '_'; }

# recipe_vars YAML SPEC...: read the recipe once and set shell variables. SPECs (fields separated by |):
#   choose|KEY|FLAG|VALUE          VALUE must be a key of the mapping KEY (else: FLAG: unknown value, known: ...)
#   value|VAR|KEY[|DEFAULT]        VAR=the scalar at KEY (a.b.c for nested keys); required without DEFAULT
#   words|VAR|KEY                  VAR=(the words of the string at KEY)
#   flags|VAR|SECTION|MODULE|SKIP  VAR=(the flags of mapping SECTION), each key checked against MODULE's Args as
#                                  its recipe would be (unknown key or wrong type: one error line naming it); the
#                                  keys in SKIP (comma-separated) are the script's own and may not appear
recipe_vars() {
    local out
    out="$("$PYTHON" - "$SCRIPT_NAME" "$@" <<'PY'
import importlib, shlex, sys

script, path, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    from alignment.pipeline.recipes import check_section, load_yaml
    from runlog import ConfigError
except Exception as e:  # noqa: BLE001  (no torch / yaml in this python)
    sys.exit(f"{script}: error: cannot import alignment ({e}); set PYTHON to the project's environment")


def fail(msg):
    print(f"{script}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def lookup(data, key, default=KeyError):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not KeyError:
                return default
            fail(f"--config: {path!r} has no key {key!r}")
        node = node[part]
    return node


def word(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


try:
    data = load_yaml(path)
    lines = []
    for spec in specs:
        kind, *rest = spec.split("|")
        if kind == "choose":
            key, flag, value = rest
            options = lookup(data, key)
            if not isinstance(options, dict) or not options:
                fail(f"--config: {path!r} key {key!r} must be a mapping of names")
            if value not in options:
                fail(f"{flag}: unknown value {value!r}; known: {', '.join(map(str, options))} (from {path})")
        elif kind in ("value", "words"):
            var, key, *default = rest
            v = lookup(data, key, default[0] if default else KeyError)
            if isinstance(v, (dict, list)) or v is None:
                fail(f"--config: {path!r} key {key!r} must be a single value, got {v!r}")
            if kind == "value":
                lines.append(f"{var}={shlex.quote(word(v))}")
            else:
                lines.append(f"{var}=({' '.join(shlex.quote(w) for w in shlex.split(str(v)))})")
        elif kind == "flags":
            var, section, module_name, skip = (rest + [""] * 4)[:4]
            mapping = data.get(section) or {}
            if not isinstance(mapping, dict):
                fail(f"--config: {path!r} section {section!r} must be a mapping")
            module = importlib.import_module(module_name)
            checked = check_section(module.Args, mapping, f"--config: {path!r} section {section!r}",
                                    skip=tuple(s for s in skip.split(",") if s))
            flags = []
            for name, v in checked.items():
                flag = "--" + name.replace("_", "-")
                if isinstance(v, bool):
                    flags.append(flag if v else "--no-" + name.replace("_", "-"))
                elif v is not None:
                    flags += [flag, word(v)]
            lines.append(f"{var}=({' '.join(shlex.quote(f) for f in flags)})")
        else:
            fail(f"recipe_vars: unknown spec {spec!r}")
except ConfigError as e:
    fail(str(e))
print("\n".join(lines))
PY
)" || exit 2
    eval "$out"
}

# stage LABEL RUN_DIR COMMAND...: one command of the recipe; RUN_DIR is the run folder it writes
stage() {
    STAGE_LABELS+=("$1")
    STAGE_DIRS+=("$2")
    shift 2
    STAGE_CMDS+=("$(printf '%q ' "$@")")
}

# the words of a command as one line that shlex.split reads back: words with spaces or quotes in single quotes
join_words() {
    local w line=""
    for w in "$@"; do
        [[ "$w" =~ ^[A-Za-z0-9_./:=+@%,-]+$ ]] || w="'${w//\'/\'\\\'\'}'"
        line+="${line:+ }$w"
    done
    printf '%s\n' "$line"
}

finished() {  # RUN_DIR: it holds a finished run (run.json with a finish time)
    [[ -f "$1/run.json" ]] \
        && "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("finished") else 1)' \
            "$1/run.json" 2>/dev/null
}

# check_stages QUIET: every command of the recipe through alignment.pipeline.dryrun (its main(): the module's own parser and
# checks, loading nothing), in one Python process (the imports once, not once per command); stops at the first bad
# command with its one error line and exit code 2. QUIET=0 prints each command (as alignment.pipeline.dryrun does) after a
# comment line naming its stage. Under --dry-run, a --device cuda flag (alignment.sft and alignment.reward_model
# have no "auto" device) is checked as --device cpu on a machine without CUDA, where the module's own check would
# refuse it; the command printed is the real one. A real run checks it as it is.
check_stages() {
    local quiet=$1 i words args=()
    for ((i = 0; i < ${#STAGE_CMDS[@]}; i++)); do
        eval "words=(${STAGE_CMDS[i]})"
        args+=("${STAGE_LABELS[i]}" "${STAGE_DIRS[i]}" "${words[@]}" $'\x1e')
    done
    "$PYTHON" - "$quiet" "$DRY_RUN" "${args[@]}" <<'PY' || exit $?
import contextlib, io, shlex, sys

import torch

quiet, rest = sys.argv[1] == "1", sys.argv[3:]
swap = sys.argv[2] == "1" and not torch.cuda.is_available()
stages, cur = [], []
for a in rest:
    if a == "\x1e":
        stages.append(cur)
        cur = []
    else:
        cur.append(a)
sys.argv[0] = "python -m alignment.pipeline.dryrun"  # its error lines name the command that reports them
from alignment.pipeline import dryrun

for i, (label, folder, *words) in enumerate(stages):
    check = list(words)
    swapped = False
    if swap:
        for j in range(len(check) - 1):
            if check[j] == "--device" and check[j + 1].startswith("cuda"):
                check[j + 1], swapped = "cpu", True
    if not quiet:
        print(f"# [{i + 1}/{len(stages)}] {label} -> {folder}", flush=True)
    try:
        if quiet or swapped:
            with contextlib.redirect_stdout(io.StringIO()):
                dryrun.main(check)
            if not quiet:
                print(shlex.join(words))
                print("# (--device cuda checked as --device cpu: no CUDA device here)")
        else:
            dryrun.main(words)
    except SystemExit as e:
        sys.stdout.flush()
        sys.exit(e.code)
    sys.stdout.flush()
PY
}

run_stages() {
    local n=${#STAGE_CMDS[@]} i words
    if [[ $DRY_RUN == 1 ]]; then
        check_stages 0
        return 0
    fi
    echo "# checking the $n commands (alignment.pipeline.dryrun)"
    check_stages 1
    for ((i = 0; i < n; i++)); do
        eval "words=(${STAGE_CMDS[i]})"
        if [[ $FRESH == 0 ]] && finished "${STAGE_DIRS[i]}"; then
            echo "# [$((i + 1))/$n] done: ${STAGE_LABELS[i]} (${STAGE_DIRS[i]} is finished; --fresh reruns it)"
            continue
        fi
        echo "# [$((i + 1))/$n] ${STAGE_LABELS[i]} -> ${STAGE_DIRS[i]}"
        echo "# $(join_words "${words[@]}")"
        "${words[@]}"
    done
}
