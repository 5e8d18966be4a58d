# The one-pass request decoder (src/common/decode.c) against msgpack-c.
if HAVE_CHECK
check_PROGRAMS += tests/check_decode
endif
tests_check_decode_SOURCES = tests/check_decode.c
tests_check_decode_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_decode_CFLAGS = $(TESTS_CFLAGS)
tests_check_decode_LDADD = $(TESTS_LIBS)
