/*
 * The body of confd_fatal() (src/ffi/lib.rs): C because Rust cannot define
 * a variadic function. Hidden: the exported symbol is the Rust entry point,
 * which jumps here with the caller's arguments untouched.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((visibility("hidden"), noreturn)) void confd_ha_fatal_impl(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
    exit(1);
}
