# Building and installing like the C passt: `make`, then `make install` (as root, or with
# DESTDIR for a package), `make uninstall`. The same variables as the original's Makefile:
#
#   make install prefix=/usr DESTDIR=/tmp/pkg
#
# pasta is passt under another name (the program picks its mode from argv[0]): installed as
# a symbolic link to passt, as is its man page to passt.1, as the original does.
#
# PREBUILT=DIR installs the passt, qrap and pesto found in DIR as they are, without running cargo
# (a packager's own build, or target/debug for a quick test); by default they are cargo's
# release build, made first.

prefix ?= /usr/local
exec_prefix ?= $(prefix)
bindir ?= $(exec_prefix)/bin
datarootdir ?= $(prefix)/share
mandir ?= $(datarootdir)/man
man1dir ?= $(mandir)/man1

CARGO ?= cargo
INSTALL ?= install
# cargo honours CARGO_TARGET_DIR from the environment; so do we.
CARGO_TARGET_DIR ?= target
PREBUILT ?=

ifeq ($(PREBUILT),)
built := $(CARGO_TARGET_DIR)/release
build := build
else
built := $(PREBUILT)
build :=
endif

BIN := passt pasta qrap pesto
MAN1 := passt.1 pasta.1 qrap.1 pesto.1

.PHONY: all build install uninstall clean

all: build

build:
	$(CARGO) build --release --package passt --bins

install: $(build)
	$(INSTALL) -d $(DESTDIR)$(bindir) $(DESTDIR)$(man1dir)
	$(INSTALL) -m 755 $(built)/passt $(built)/qrap $(built)/pesto $(DESTDIR)$(bindir)/
	ln -sf passt $(DESTDIR)$(bindir)/pasta
	$(INSTALL) -m 644 man/passt.1 man/qrap.1 man/pesto.1 $(DESTDIR)$(man1dir)/
	ln -sf passt.1 $(DESTDIR)$(man1dir)/pasta.1

uninstall:
	rm -f $(BIN:%=$(DESTDIR)$(bindir)/%)
	rm -f $(MAN1:%=$(DESTDIR)$(man1dir)/%)

clean:
	$(CARGO) clean
