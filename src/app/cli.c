#include "app/cli.h"

#include <stdio.h>
#include <string.h>

#include "app/commands.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"batch", sp_cmd_batch, "run a batch input file (OpenAI Batch API lines) without a server"},
    {"bench", sp_cmd_bench, "benchmark the engine offline (prefill and batched decode)"},
    {"chat-template", sp_cmd_chat_template, "render a conversation with a model's chat template"},
    {"generate", sp_cmd_generate, "complete a prompt on the command line"},
    {"grammar-bench", sp_cmd_grammar_bench, "time grammar checks and masks per token"},
    {"mkmodel", sp_cmd_mkmodel, "write a random-weight Llama GGUF model of a real shape"},
    {"perplexity", sp_cmd_perplexity,
     "a model's perplexity over a text; KL divergence from a base run"},
    {"roofline", sp_cmd_roofline, "measure bandwidth and peak arithmetic; bounds for a model"},
    {"serve", sp_cmd_serve, "serve the OpenAI-compatible HTTP API"},
    {"tokenize", sp_cmd_tokenize, "print the token ids of a text"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: spindle <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-15s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun `spindle <command> --help` for a command's options.\n");
}

int sp_cli_main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "spindle: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
