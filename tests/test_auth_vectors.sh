#!/bin/sh
# The authentication test vectors in docs/PROTOCOL.md, recomputed by
# tests/auth_vectors.py (PyNaCl: a second implementation of the handshake
# and the frame tags); tests/check_auth.c checks the C code against the same
# values.
set -eu
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
exec "${PYTHON3:-/usr/bin/python3}" "$srcdir/tests/auth_vectors.py" check "$srcdir/docs/PROTOCOL.md"
