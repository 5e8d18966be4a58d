# bench_auth: authenticated pushes and pulls next to unauthenticated ones in
# the same run (bench/RESULTS.md, "Authentication"). `make bench` runs it
# first (a prerequisite, so that its recipe in Makefile.am stays as it is);
# `make bench-auth` runs it alone.
EXTRA_PROGRAMS += bench/bench_auth
bench_bench_auth_SOURCES = bench/bench_auth.c bench/proc.c bench/proc.h
bench_bench_auth_CFLAGS = $(AM_CFLAGS) -pthread
bench_bench_auth_LDADD = libemad.la -lpthread
CLEANFILES += bench/bench_auth

bench-auth: bench/bench_auth emad emactl libemad.la
	$(builddir)/bench/bench_auth --emad $(abs_builddir)/emad --emactl $(abs_builddir)/emactl \
	  --reps 9
bench: bench-auth
.PHONY: bench-auth
