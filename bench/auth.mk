# bench_auth: authenticated pushes and pulls next to unauthenticated ones in
# the same run (bench/RESULTS.md, "Authentication"). `make bench` runs it
# first (a prerequisite, so that its recipe in Makefile.am stays as it is);
# `make bench-auth` runs it alone. Four rounds of fresh daemons, 4 pairs
# each: one pair of daemons is one draw of how two daemons differ.
EXTRA_PROGRAMS += bench/bench_auth
bench_bench_auth_SOURCES = bench/bench_auth.c bench/proc.c bench/proc.h
bench_bench_auth_CFLAGS = $(AM_CFLAGS) -pthread
bench_bench_auth_LDADD = libemad.la -lpthread
CLEANFILES += bench/bench_auth

bench-auth: bench/bench_auth emad emactl libemad.la
	$(builddir)/bench/bench_auth --emad $(abs_builddir)/emad --emactl $(abs_builddir)/emactl \
	  --reps 4 --rounds 4
bench: bench-auth
.PHONY: bench-auth

# bench_mac: the frames' MAC per core (GMAC, as the frames compute it, and
# OpenSSL's AES-256-GCM and Poly1305 beside it) next to memcpy.
EXTRA_PROGRAMS += bench/bench_mac
bench_bench_mac_SOURCES = bench/bench_mac.c
bench_bench_mac_CPPFLAGS = $(AM_CPPFLAGS)
bench_bench_mac_CFLAGS = $(AM_CFLAGS) $(SODIUM_CFLAGS) $(LIBCRYPTO_CFLAGS)
bench_bench_mac_LDADD = libemadwire.la $(SODIUM_LIBS) $(LIBCRYPTO_LIBS)
CLEANFILES += bench/bench_mac

bench-mac: bench/bench_mac
	$(builddir)/bench/bench_mac --mib 64 --runs 3
bench: bench-mac
.PHONY: bench-mac
