# Authentication, the clients' side: emactl keygen, --user/--key-file, the
# environment, the Python client, against tests/auth_peer.py (a second
# implementation of the daemon's side of the handshake and the frames, in
# PyNaCl) and against the real daemon with an auth file.
if HAVE_CHECK
TESTS += tests/test_authclient_peer.sh tests/test_authclient.sh
endif
EXTRA_DIST += tests/test_authclient_peer.sh tests/test_authclient.sh tests/auth_peer.py
