#!/bin/sh
# test_statedir.sh - the state directory is the daemon's alone, end to end
# with the real emad and emactl. A state dir is prepared with:
#   snapshots/linked   a symlink to a victim directory outside, holding a
#                      valid snapshot of a model named "linked";
#   snapshots/lnfile/  a snapshot file that is a symlink into the victim;
#   snapshots/fifo/    a valid first file of a two-decay snapshot, and a
#                      FIFO named like its second file (once hung startup);
#   snapshots/own/     a file emad did not write (notes.txt).
# The daemon must start and serve, load nothing through a link, and neither
# a remote create + snapshot + drop of "linked" nor of "own" may create,
# change or remove anything outside the state dir (names, sizes, modes and
# mtimes of the victim are compared) or any file emad did not write. SIGTERM
# with a model that cannot be written exits 3 and names it. A symlinked
# emad.lock is refused at startup without creating its target.
set -eu

test_name=test_statedir.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

# tree DIR: every entry below DIR with type, size, mode, mtime (ns) and link target.
tree() {
    (cd "$1" && find . -printf '%p %y %s %m %T@ %l\n' | sort)
}

# A two-float safetensors file (header built by hand from the format).
mkdir "$work/in"
"$PYTHON3" - "$work/in/p.safetensors" <<'EOF' || fail "cannot write the input file"
import json, struct, sys
hdr = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
hdr += b" " * (-len(hdr) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(hdr)) + hdr + struct.pack("<2f", 1.5, -2.0))
EOF

push() {
    ctl push "$1" "$work/in/p.safetensors" --step "$2" >"$work/push.out" 2>&1 ||
        fail "push $1 step $2: $(cat "$work/push.out")"
}

# ---- a valid snapshot of "linked", moved outside the state dir -------------------------
start_daemon --snapshot-interval 0
ctl create linked --decay 0.5 >/dev/null || fail "create linked"
push linked 5
ctl snapshot linked >/dev/null || fail "snapshot linked"
ctl create fifo --decay 0.5,0.9 >/dev/null || fail "create fifo"
push fifo 5
ctl snapshot fifo >/dev/null || fail "snapshot fifo"
stop_daemon KILL
mv "$work/state/snapshots/fifo" "$work/fifo"
victim=$work/victim
mkdir "$victim"
mv "$work/state/snapshots/linked/"*.safetensors "$victim/"
echo "keep me" >"$victim/precious.txt"
rm -rf "$work/state"

# ---- the hostile state dir -----------------------------------------------------------------
mkdir -p "$work/state/snapshots/lnfile" "$work/state/snapshots/own"
mv "$work/fifo" "$work/state/snapshots/fifo"
ln -s "$victim" "$work/state/snapshots/linked"
ln -s "$victim/00000000000000000005.d0.safetensors" \
    "$work/state/snapshots/lnfile/00000000000000000005.d0.safetensors"
fifo=$work/state/snapshots/fifo/00000000000000000005.d1.safetensors
rm "$fifo"
mkfifo "$fifo"
echo "not emad's" >"$work/state/snapshots/own/notes.txt"
before=$(tree "$victim")

start_daemon --snapshot-interval 0 # fails if the FIFO blocked startup
ctl list >"$work/list.out" || fail "list: $(cat "$work/list.out")"
if grep -q "linked\|lnfile\|fifo\|own" "$work/list.out"; then
    fail "a model was loaded through a link or a FIFO: $(cat "$work/list.out")"
fi
grep -q 'event=snapshot_entry_ignored .* name="linked" reason="a symbolic link' "$work/emad.log" ||
    fail "the symlinked model directory was not reported"
grep -q "event=snapshot_broken model=fifo .*not a regular file" "$work/emad.log" ||
    fail "the FIFO was not reported"
[ -p "$fifo.broken" ] || fail "the FIFO was not set aside as $fifo.broken"

# A remote create + push + snapshot + drop of "linked": refused writes, nothing outside touched.
ctl create linked --decay 0.5 >/dev/null || fail "create linked"
push linked 1
if ctl snapshot linked >"$work/snap.out" 2>&1; then
    fail "a snapshot through the symlink succeeded: $(cat "$work/snap.out")"
fi
grep -q "symbolic links are never followed" "$work/snap.out" ||
    fail "snapshot error does not say why: $(cat "$work/snap.out")"
ctl drop linked >/dev/null || fail "drop linked"
grep -q "event=snapshot_dir_kept model=linked" "$work/emad.log" || fail "drop did not log the link"
[ -L "$work/state/snapshots/linked" ] || fail "the link itself was removed"

# "own": snapshots written next to a foreign file; drop removes only emad's files.
ctl create own --decay 0.5 >/dev/null || fail "create own"
push own 3
ctl snapshot own >/dev/null || fail "snapshot own"
[ -f "$work/state/snapshots/own/00000000000000000003.d0.safetensors" ] || fail "own not written"
ctl drop own >/dev/null || fail "drop own"
[ "$(ls -A "$work/state/snapshots/own")" = "notes.txt" ] ||
    fail "drop left or removed the wrong files: $(ls -A "$work/state/snapshots/own")"
grep -q 'event=snapshot_file_kept model=own file="notes.txt"' "$work/emad.log" ||
    fail "drop did not log the file it left"

# "fifo": a model whose directory holds a FIFO is written and served normally.
ctl create fifo --decay 0.5 >/dev/null || fail "create fifo"
push fifo 4
ctl snapshot fifo >/dev/null || fail "snapshot fifo"
[ -p "$fifo.broken" ] || fail "the FIFO is gone"

# SIGTERM with "linked" unwritable: exit status 3, the model named, no "snapshots=written".
ctl create linked --decay 0.5 >/dev/null || fail "create linked again"
push linked 2
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 3 ] || fail "SIGTERM with an unwritable model exited $status, not 3"
grep -q "event=shutdown snapshots=failed unwritten=1 models=linked" "$work/emad.log" ||
    fail "the shutdown did not name the unwritten model"
if grep -q "snapshots=written" "$work/emad.log"; then
    fail "the log claims every snapshot was written"
fi

# Restart: fifo is back at step 4, nothing came through a link.
start_daemon --snapshot-interval 0
ctl list >"$work/list.out" || fail "list after restart"
grep -q "fifo" "$work/list.out" || fail "fifo not restored: $(cat "$work/list.out")"
if grep -q "linked\|lnfile\|own" "$work/list.out"; then
    fail "unexpected models after restart: $(cat "$work/list.out")"
fi
stop_daemon_clean

# A symlinked lock file: startup refused, its target never created.
mkdir "$work/state2"
ln -s "$victim/created.lock" "$work/state2/emad.lock"
status=0
timeout 60 "$EMAD" --listen "tcp://127.0.0.1:$(pick_port)" --state-dir "$work/state2" --http off \
    2>>"$work/emad.log" || status=$?
[ "$status" -eq 1 ] || fail "a symlinked emad.lock: exit status $status, not 1"

after=$(tree "$victim")
[ "$before" = "$after" ] || fail "the victim directory changed:
before:
$before
after:
$after"
echo "test_statedir.sh: ok"
