/* timeout.h - JAXMG_TIMEOUT_S, read in this one place by the C core and, through
 * the host library's export jaxmg_timeout_s (ops/exports_host.c), by the Python
 * layer, so that every wait of a job (the rendezvous, the key-value exchanges,
 * NCCL's bootstrap) means the same number.
 */
#ifndef JAXMG_TIMEOUT_H
#define JAXMG_TIMEOUT_H

/* Seconds when JAXMG_TIMEOUT_S is unset, empty or not a positive number. */
#define JMG_TIMEOUT_DEFAULT_S 180.0

/* Parses text as a number of seconds: a finite decimal > 0, with blanks
 * around it allowed ("5 " is 5). Returns 0 and the value in *out, or -1
 * (text NULL, blank, or not such a number: *out untouched). */
int jmg_timeout_parse(const char* text, double* out);

/* JAXMG_TIMEOUT_S's seconds, else JMG_TIMEOUT_DEFAULT_S. A value that does
 * not parse is reported once per process on stderr, naming it, and the
 * default stands: a typo must turn into neither "wait forever" nor "fail at
 * once". */
double jmg_timeout_s(void);

#endif
