# The adversarial suite (issue 20): hostile and buggy clients against the real daemon, with a
# second client's `hello` latency bounded throughout.
if HAVE_CHECK
TESTS += tests/test_adversarial.sh tests/test_crash.sh tests/test_pull_pages.sh
endif
EXTRA_DIST += tests/test_adversarial.sh tests/adversarial.py tests/adv_wire.py \
	tests/test_crash.sh tests/crash_prop.py bench/bench_hello.py tests/test_pull_pages.sh

# The watchdog keep-alives follow the event loop, not the threadpool (src/daemon/notify.c).
if HAVE_CHECK
check_PROGRAMS += tests/check_notify
endif
tests_check_notify_SOURCES = tests/check_notify.c
tests_check_notify_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_notify_CFLAGS = $(TESTS_CFLAGS)
tests_check_notify_LDADD = $(TESTS_LIBS) -lpthread
