# client/ctl: emactl, the command-line client, over libemad and the file
# formats of src/common.
bin_PROGRAMS += emactl
emactl_SOURCES = client/ctl/emactl.c
emactl_CFLAGS = $(AM_CFLAGS)
emactl_LDADD = libemad.la libemadcore.la
