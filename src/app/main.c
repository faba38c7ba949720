/* spindle: command-line entry point. Dispatches to the subcommands in src/app/. */
#include "app/cli.h"

int main(int argc, char **argv) { return sp_cli_main(argc, argv); }
