# client/ctl: emactl, the command-line client, over libemad and the file
# formats of src/common. main.c dispatches to the command entries of the
# cmd_*.c files; args.c is the one argument parser; ctl.h is private.
bin_PROGRAMS += emactl
emactl_SOURCES = client/ctl/main.c client/ctl/args.c client/ctl/ctl.h \
	client/ctl/cmd_model.c client/ctl/cmd_data.c client/ctl/cmd_snapshot.c \
	client/ctl/cmd_stats.c client/ctl/cmd_cluster.c client/ctl/cmd_auth.c
emactl_CFLAGS = $(AM_CFLAGS)
emactl_LDADD = libemad.la libemadcore.la
