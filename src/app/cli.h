/* Command-line front end: `spindle <command> [options]`. */
#ifndef SP_APP_CLI_H
#define SP_APP_CLI_H

/* Runs the command line; returns the process exit status. Main thread only. */
int sp_cli_main(int argc, char **argv);

#endif
