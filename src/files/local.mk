# src/files: the daemon's file handling (snapshot directories, file I/O).
# Part of libemadd (src/daemon/local.mk).
emadd_files_sources =
