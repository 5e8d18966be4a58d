# src/files: the daemon's file handling (snapshot directories, file I/O).
# Part of libemadd (src/daemon/local.mk).
emadd_files_sources = \
	src/files/fileio.c src/files/fileio.h \
	src/files/snapdir.c src/files/snapdir.h
