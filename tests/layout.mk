# tests/layout.mk - push layouts (docs/PROTOCOL.md, "Push layouts"): the
# end-to-end suite of libemad's data-only pushes, the resend when the
# daemon gave a layout up, the raw wire form and its errors, and several
# writers (check_e2e_layout).
if HAVE_CHECK
check_PROGRAMS += tests/check_e2e_layout
endif
tests_check_e2e_layout_SOURCES = tests/check_e2e_layout.c
tests_check_e2e_layout_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_e2e_layout_CFLAGS = $(TESTS_CFLAGS)
tests_check_e2e_layout_LDADD = libemad.la $(TESTS_LIBS)
