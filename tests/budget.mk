# tests/budget.mk - the memory budget's tests: the Check suite of the
# budget and what the store charges to it, and the end-to-end suite of the
# memory cases of one client against the daemon over loopback.
if HAVE_CHECK
check_PROGRAMS += tests/check_budget
TESTS += tests/test_budget.sh
endif
tests_check_budget_SOURCES = tests/check_budget.c
tests_check_budget_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_budget_CFLAGS = $(TESTS_CFLAGS)
tests_check_budget_LDADD = $(TESTS_LIBS)
EXTRA_DIST += tests/test_budget.sh tests/budget_attacks.py
