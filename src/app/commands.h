/* The subcommands of the `spindle` executable. Each takes argv starting at its own name and
 * returns the process exit status (0 success, 1 failure, 2 usage error). Main thread only. */
#ifndef SP_APP_COMMANDS_H
#define SP_APP_COMMANDS_H

int sp_cmd_batch(int argc, char **argv);
int sp_cmd_bench(int argc, char **argv);
int sp_cmd_chat_template(int argc, char **argv);
int sp_cmd_generate(int argc, char **argv);
int sp_cmd_grammar_bench(int argc, char **argv);
int sp_cmd_mkmodel(int argc, char **argv);
int sp_cmd_perplexity(int argc, char **argv);
int sp_cmd_roofline(int argc, char **argv);
int sp_cmd_serve(int argc, char **argv);
int sp_cmd_tokenize(int argc, char **argv);

#endif
