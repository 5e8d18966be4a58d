# Authentication: the shared code (key formats, handshake, frame tags)
# against the test vectors of docs/PROTOCOL.md, and those vectors
# recomputed by a second implementation (PyNaCl).
if HAVE_CHECK
check_PROGRAMS += tests/check_auth tests/check_authfile tests/check_authsess
TESTS += tests/test_auth_vectors.sh
endif
tests_check_auth_SOURCES = tests/check_auth.c
tests_check_auth_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_auth_CFLAGS = $(TESTS_CFLAGS) $(SODIUM_CFLAGS)
tests_check_auth_LDADD = libemadwire.la $(CHECK_LIBS) $(MSGPACK_LIBS) $(SODIUM_LIBS) $(LIBCRYPTO_LIBS) -lm
EXTRA_DIST += tests/test_auth_vectors.sh tests/auth_vectors.py

# End to end: tests/auth_e2e.py against the real daemon.
if HAVE_CHECK
TESTS += tests/test_auth.sh
endif
EXTRA_DIST += tests/test_auth.sh tests/auth_e2e.py tests/auth_client.py
tests_check_authfile_SOURCES = tests/check_authfile.c
tests_check_authfile_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_authfile_CFLAGS = $(TESTS_CFLAGS)
tests_check_authfile_LDADD = $(TESTS_LIBS)
tests_check_authsess_SOURCES = tests/check_authsess.c
tests_check_authsess_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_authsess_CFLAGS = $(TESTS_CFLAGS)
tests_check_authsess_LDADD = $(TESTS_LIBS)

# The auth file parser's fuzz target (scripts/fuzz; seeds in fuzz/corpus/authfile).
if ENABLE_FUZZING
noinst_PROGRAMS += fuzz/fuzz_authfile
fuzz_fuzz_authfile_SOURCES = fuzz/fuzz_authfile.c
fuzz_fuzz_authfile_CFLAGS = $(AM_CFLAGS) -fsanitize=fuzzer
fuzz_fuzz_authfile_LDFLAGS = -fsanitize=fuzzer
fuzz_fuzz_authfile_LDADD = libemadd.la libemadcore.la
endif
EXTRA_DIST += fuzz/fuzz_authfile.c
