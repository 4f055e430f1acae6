# sse_httpd.m4 - configure macros that find Apache httpd (via apxs), APR and
# APR-util for mod_sse.
#
# Why apxs: it is the one tool every httpd install (distribution package or
# source build) ships that knows where headers and modules go and which flags
# httpd itself was built with. We only *query* it (apxs -q); libtool builds
# and installs the module, so `make install` honours DESTDIR.
#
# Used by configure.ac. Results (AC_SUBST):
#   APXS, HTTPD_INCLUDEDIR, HTTPD_CFLAGS, HTTPD_CPPFLAGS,
#   HTTPD_LIBEXECDIR (where modules go), HTTPD_SYSCONFDIR, HTTPD_SBINDIR,
#   APR_INCLUDES, APR_CPPFLAGS, APR_LIBS, APU_INCLUDES, APU_LIBS.

# SSE_FIND_APXS: --with-apxs=PATH, else apxs then apxs2 in PATH and /usr/bin.
# --without-apxs disables the module (only the bus library, sse-pub and the
# unit tests are built); sets sse_have_apxs=yes|no.
AC_DEFUN([SSE_FIND_APXS], [
  AC_ARG_WITH([apxs],
    [AS_HELP_STRING([--with-apxs=PATH],
      [path to httpd's apxs (default: apxs or apxs2 in PATH and /usr/bin);
       --without-apxs builds only the bus library and sse-pub])],
    [sse_with_apxs="$withval"], [sse_with_apxs=check])
  sse_have_apxs=no
  AS_CASE([$sse_with_apxs],
    [no], [AC_MSG_NOTICE([--without-apxs: the httpd module will not be built])],
    [yes|check], [
      AC_PATH_PROGS([APXS], [apxs apxs2], [], [$PATH$PATH_SEPARATOR/usr/bin$PATH_SEPARATOR/usr/sbin])
      AS_IF([test -z "$APXS"],
        [AC_MSG_ERROR([apxs not found: install httpd's development files (Debian: apt-get install apache2-dev), pass --with-apxs=/path/to/apxs, or --without-apxs to build only sse-pub and the bus library])])
      sse_have_apxs=yes],
    [
      APXS="$sse_with_apxs"
      AS_IF([test ! -x "$APXS"],
        [AC_MSG_ERROR([--with-apxs=$APXS: not an executable file; give the full path of httpd's apxs (Debian: /usr/bin/apxs from apache2-dev)])])
      sse_have_apxs=yes])

  AS_IF([test "$sse_have_apxs" = yes], [
    AC_MSG_CHECKING([httpd include directory])
    HTTPD_INCLUDEDIR=`$APXS -q INCLUDEDIR 2>/dev/null`
    AC_MSG_RESULT([$HTTPD_INCLUDEDIR])
    AS_IF([test -z "$HTTPD_INCLUDEDIR" || test ! -f "$HTTPD_INCLUDEDIR/httpd.h"],
      [AC_MSG_ERROR([$APXS -q INCLUDEDIR gave '$HTTPD_INCLUDEDIR' which has no httpd.h: is apxs from a complete httpd development install? (Debian: apt-get install apache2-dev)])])
    HTTPD_CFLAGS="`$APXS -q CFLAGS 2>/dev/null` `$APXS -q EXTRA_CFLAGS 2>/dev/null`"
    HTTPD_CPPFLAGS="`$APXS -q CPPFLAGS 2>/dev/null` `$APXS -q EXTRA_CPPFLAGS 2>/dev/null`"
    AC_MSG_CHECKING([httpd module directory])
    HTTPD_LIBEXECDIR=`$APXS -q LIBEXECDIR 2>/dev/null`
    AC_MSG_RESULT([$HTTPD_LIBEXECDIR])
    AC_MSG_CHECKING([httpd configuration directory])
    HTTPD_SYSCONFDIR=`$APXS -q SYSCONFDIR 2>/dev/null`
    AC_MSG_RESULT([$HTTPD_SYSCONFDIR])
    HTTPD_SBINDIR=`$APXS -q SBINDIR 2>/dev/null`
    # apxs knows which apr-1-config/apu-1-config httpd was built against;
    # prefer those over whatever comes first in PATH.
    sse_apxs_apr_config=`$APXS -q APR_CONFIG 2>/dev/null`
    sse_apxs_apu_config=`$APXS -q APU_CONFIG 2>/dev/null`
  ])
  AC_SUBST([APXS])
  AC_SUBST([HTTPD_INCLUDEDIR])
  AC_SUBST([HTTPD_CFLAGS])
  AC_SUBST([HTTPD_CPPFLAGS])
  AC_SUBST([HTTPD_LIBEXECDIR])
  AC_SUBST([HTTPD_SYSCONFDIR])
  AC_SUBST([HTTPD_SBINDIR])
])

# SSE_FIND_APR: apr-1-config (from apxs, else PATH), else pkg-config apr-1.
AC_DEFUN([SSE_FIND_APR], [
  AC_ARG_WITH([apr-config],
    [AS_HELP_STRING([--with-apr-config=PATH], [path to apr-1-config])],
    [APR_CONFIG="$withval"],
    [AS_IF([test -n "$sse_apxs_apr_config" && test -x "$sse_apxs_apr_config"],
       [APR_CONFIG="$sse_apxs_apr_config"],
       [AC_PATH_PROGS([APR_CONFIG], [apr-1-config], [])])])
  AS_IF([test -n "$APR_CONFIG"], [
    APR_INCLUDES=`$APR_CONFIG --includes`
    APR_CPPFLAGS="`$APR_CONFIG --cppflags` `$APR_CONFIG --cflags`"
    APR_LIBS=`$APR_CONFIG --link-ld --libs`
    AC_MSG_NOTICE([APR from $APR_CONFIG: $APR_INCLUDES])
  ], [
    PKG_CHECK_MODULES([APR], [apr-1], [
      APR_INCLUDES="$APR_CFLAGS"
      APR_CPPFLAGS=""
    ], [AC_MSG_ERROR([APR not found: neither apr-1-config nor pkg-config apr-1 work (Debian: apt-get install libapr1-dev), or pass --with-apr-config=PATH])])
  ])
  AC_SUBST([APR_INCLUDES])
  AC_SUBST([APR_CPPFLAGS])
  AC_SUBST([APR_LIBS])
])

# SSE_FIND_APU: apu-1-config (from apxs, else PATH), else pkg-config apr-util-1.
AC_DEFUN([SSE_FIND_APU], [
  AC_ARG_WITH([apu-config],
    [AS_HELP_STRING([--with-apu-config=PATH], [path to apu-1-config])],
    [APU_CONFIG="$withval"],
    [AS_IF([test -n "$sse_apxs_apu_config" && test -x "$sse_apxs_apu_config"],
       [APU_CONFIG="$sse_apxs_apu_config"],
       [AC_PATH_PROGS([APU_CONFIG], [apu-1-config], [])])])
  AS_IF([test -n "$APU_CONFIG"], [
    APU_INCLUDES=`$APU_CONFIG --includes`
    APU_LIBS=`$APU_CONFIG --link-ld --libs`
    AC_MSG_NOTICE([APR-util from $APU_CONFIG: $APU_INCLUDES])
  ], [
    PKG_CHECK_MODULES([APU], [apr-util-1], [
      APU_INCLUDES="$APU_CFLAGS"
    ], [AC_MSG_ERROR([APR-util not found: neither apu-1-config nor pkg-config apr-util-1 work (Debian: apt-get install libaprutil1-dev), or pass --with-apu-config=PATH])])
  ])
  AC_SUBST([APU_INCLUDES])
  AC_SUBST([APU_LIBS])
])
