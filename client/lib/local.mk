# client/lib: libemad, the client library. It links only the wire part of
# src/common; only emad_* symbols are exported.
lib_LTLIBRARIES = libemad.la
libemad_la_SOURCES = client/lib/libemad.c
libemad_la_CFLAGS = $(AM_CFLAGS) $(NANOMSG_CFLAGS) $(MSGPACK_CFLAGS)
libemad_la_LIBADD = libemadwire.la $(NANOMSG_LIBS) $(MSGPACK_LIBS)
libemad_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0 -export-symbols-regex '^emad_'
