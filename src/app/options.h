/* Command-line options shared by the commands that run the engine (serve, bench). */
#ifndef SP_APP_OPTIONS_H
#define SP_APP_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "sched/engine.h"

/* Parses one engine option at argv[0] (with its value at argv[1]) into *o. Returns the number
 * of arguments used (1 or 2), 0 if argv[0] is not an engine option, or -1 after printing an
 * error for a bad value. */
int sp_engine_options_parse(sp_engine_opts *o, int argc, char **argv);

/* Prints the engine options' help lines. */
void sp_engine_options_usage(FILE *f);

/* Parses a speculative decoding mode into o: "off" (spec_k 0, spec_off), "fixed:K" with
 * 1 <= K <= SP_ENGINE_MAX_SPEC (spec_k K), "auto" (spec_auto, spec_k SP_ENGINE_SPEC_AUTO_K
 * unless a --spec-max came first). */
bool sp_parse_spec(const char *s, sp_engine_opts *o);


/* Parses a size with an optional K/M/G suffix (powers of 1024), e.g. "512M", "2G". */
bool sp_parse_size(const char *s, int64_t *out);

/* The default data directory (files and batch jobs): $SPINDLE_DATA_DIR, else
 * $XDG_DATA_HOME/spindle, else $HOME/.local/share/spindle, into buf[cap]; NULL when none of
 * these is set. */
const char *sp_default_data_dir(char *buf, size_t cap);

#endif
